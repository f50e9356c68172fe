"""Which Hamming thresholds separate copies from distinct pictures? The measurement behind DEFAULT_RULES.

Distinct pictures: the photographs scikit-learn and scikit-image ship (`pip install scikit-image`),
whole and cut into non-overlapping 2x2 and 3x3 tiles, plus scikit-image's 200 LFW face crops
(similar-looking faces: a hard case). Copies: each whole photograph and tile after one edit each
(resize, JPEG recompression, 5% crop, brightness, gamma, 2 degree rotation, small caption), and,
for the orientation mode, mirrored and rotated.

For every hash and threshold t it prints recall (edited copies within t of their original) and
false pairs (distinct pictures within t of each other, out of all their pairs); with
`--orientations` the distinct pairs are compared under all 8 orientations, as `match
--orientations` does. Usage: python bench/thresholds.py [--out bench/results/thresholds.md]
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from dupflow.encode.hashing import DIHEDRAL, ENCODERS, hash_input
from dupflow.index import as_words, brute_force_pairs
from dupflow.io.decoding import decode_image

METRICS = ("phash", "dhash", "ahash", "whash")
THRESHOLDS = range(0, 17, 2)


def photographs() -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    try:
        import skimage.data as sk
    except ImportError:
        print("scikit-image is not installed: measuring on scikit-learn's two photographs only")
        return photos
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "coins", "text", "page",
                 "hubble_deep_field", "retina", "brick", "grass", "gravel", "cell", "horse", "clock",
                 "immunohistochemistry", "microaneurysms"):
        photos.append(Image.fromarray(getattr(sk, name)()).convert("RGB"))
    return photos


def distinct_pictures() -> list[Image.Image]:
    out = []
    for photo in photographs():
        out.append(photo)
        for grid in (2, 3):
            w, h = photo.width // grid, photo.height // grid
            out += [photo.crop((x * w, y * h, (x + 1) * w, (y + 1) * h)) for x in range(grid) for y in range(grid)]
    try:
        import skimage.data as sk

        faces = sk.lfw_subset()[:200]
        out += [Image.fromarray((f * 255).astype(np.uint8)).convert("RGB").resize((128, 128)) for f in faces]
    except ImportError:
        pass
    return out


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(img: Image.Image, f: float) -> Image.Image:
    dx, dy = int(img.width * f / 2), int(img.height * f / 2)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def _caption(img: Image.Image) -> Image.Image:
    out = img.copy()
    ImageDraw.Draw(out).text((img.width // 20, img.height - img.height // 8), "dupflow 2026", fill=(255, 255, 255))
    return out


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resize 50%": lambda i: i.resize((max(8, i.width // 2), max(8, i.height // 2)), Image.Resampling.BILINEAR),
    "jpeg q40": lambda i: _jpeg(i, 40),
    "crop 5%": lambda i: _crop(i, 0.05),
    "brightness +20%": lambda i: ImageEnhance.Brightness(i).enhance(1.2),
    "gamma 0.8": lambda i: i.point(lambda v: int(255 * (v / 255) ** 0.8)),
    "rotate 2deg": lambda i: i.rotate(2, resample=Image.Resampling.BILINEAR),
    "caption": _caption,
}
ORIENTED = {
    "mirror": lambda i: i.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rotate 90": lambda i: i.transpose(Image.Transpose.ROTATE_90),
}


def hashes(img: Image.Image) -> dict[str, np.ndarray]:
    """Every metric's hash of `img` as dupflow computes it (reduced-scale decode of a PNG)."""
    buf = io.BytesIO()
    img.save(buf, "PNG")
    decoded = decode_image(buf.getvalue(), mode="RGB", decode_size=64, max_pixels=10**9)
    gray = hash_input(decoded.image.convert("L"), 64)
    out = {m: as_words(np.array([ENCODERS[m].fn(decoded, gray, 8)], np.uint64)) for m in METRICS}
    variants = ENCODERS["phash_dihedral"].fn(decoded, gray, 8)
    out["phash_dihedral"] = np.frombuffer(variants, ">u8").astype(np.uint64).reshape(len(DIHEDRAL), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "thresholds.md")
    args = parser.parse_args()
    pictures = distinct_pictures()
    print(f"{len(pictures)} distinct pictures, {len(pictures) * (len(pictures) - 1) // 2} distinct pairs")
    base = [hashes(p) for p in pictures]
    lines = [f"# Thresholds: {len(pictures)} distinct pictures, "
             f"{len(pictures) * (len(pictures) - 1) // 2} distinct pairs (64-bit hashes)", ""]
    header = "| metric | " + " | ".join(f"t={t}" for t in THRESHOLDS) + " |"
    rule = "|---" * (len(THRESHOLDS) + 1) + "|"
    edits = {**EDITS, **ORIENTED}
    edited = {name: [hashes(fn(p)) for p in pictures if min(p.size) >= 64] for name, fn in edits.items()}
    originals = [b for b, p in zip(base, pictures, strict=True) if min(p.size) >= 64]
    for metric in METRICS:
        words = np.concatenate([b[metric] for b in base])
        lines += [f"## {metric}", "", header, rule]
        for name in edits:
            d = np.array([int(np.bitwise_count(o[metric] ^ e[metric]).sum()) for o, e in zip(originals, edited[name],
                                                                                                 strict=True)])
            lines.append(f"| recall: {name} | " + " | ".join(f"{np.mean(d <= t):.0%}" for t in THRESHOLDS) + " |")
        false = [len(brute_force_pairs(words, t).a) for t in THRESHOLDS]
        lines.append("| false pairs | " + " | ".join(str(f) for f in false) + " |")
        if metric == "phash":
            variants = np.concatenate([b["phash_dihedral"] for b in base])  # (7N, 1): picture i's k-th variant
            owner = np.repeat(np.arange(len(base)), len(DIHEDRAL))
            oriented = []
            for t in THRESHOLDS:
                a, b, _ = brute_force_pairs(variants, t, words)
                keep = owner[a] != b
                pairs = {(min(i, j), max(i, j)) for i, j in zip(owner[a][keep].tolist(), b[keep].tolist(), strict=True)}
                pairs |= set(zip(*brute_force_pairs(words, t)[:2], strict=True))
                oriented.append(len(pairs))
            lines.append("| false pairs, --orientations | " + " | ".join(str(f) for f in oriented) + " |")
            for name in ORIENTED:
                d = np.array([int(np.bitwise_count(o["phash_dihedral"] ^ e["phash"]).sum(axis=1).min())
                              for o, e in zip(originals, edited[name], strict=True)])
                lines.append(f"| recall: {name}, --orientations | "
                             + " | ".join(f"{np.mean(d <= t):.0%}" for t in THRESHOLDS) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
