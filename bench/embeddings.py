"""Hashes vs CNN embeddings vs combined rules: pair precision and recall per transform, with hard negatives.

The set (deterministic from --seed, written under bench/.work/embed-SEED/):

- bases: the photographs scikit-learn and scikit-image ship (`pip install scikit-image`; sources and
  licences in those packages' data README files), whole and as non-overlapping 2x2 tiles;
- each base after every transform users meet (re-encode, resize, crops of 5/10/20%, small and 90
  degree rotation, flip, colour shifts, blur, watermark, grayscale, format change, a combination);
- hard negatives: pairs of crops of one photograph that overlap by at most 30% of their area, and
  the left/right views of scikit-image's stereo motorcycle (same scene, different photograph).

Everything is encoded by dupflow itself (`run_encode`, 2 processes, phash+dhash+cnn) so the figures
include the real decode and preprocessing. Each rule is then applied to every pair (brute force) and
compared with the labels: a pair is true when both files come from the same base. Usage:

    .venv/bin/python bench/embeddings.py [--seed 0] [--out bench/results/embeddings.md]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from dupflow.encode.settings import EncodeSettings
from dupflow.index import as_words, brute_force_pairs, cosine_pairs
from dupflow.io.sources import DatasetSource
from dupflow.match.embeddings import embeddings_from_store
from dupflow.match.rules import parse_rules
from dupflow.store.encode_job import run_encode
from dupflow.store.encodings import EncodingsStore

WORK = Path(__file__).parent / ".work"
SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "camera", "moon", "coins", "text", "page", "hubble_deep_field",
           "retina", "brick", "grass", "gravel", "cell", "horse", "clock", "immunohistochemistry", "microaneurysms")


def photographs() -> dict[str, Image.Image]:
    from sklearn.datasets import load_sample_images

    found = dict(zip(("china", "flower"), (Image.fromarray(a) for a in load_sample_images().images), strict=True))
    import skimage.data as sk

    for name in SKIMAGE:
        found[name] = Image.fromarray(getattr(sk, name)()).convert("RGB")
    return found


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(img: Image.Image, f: float, rng: np.random.Generator) -> Image.Image:
    """Remove a fraction `f` of the width and of the height, split at random between the two sides."""
    cut_w, cut_h = int(img.width * f), int(img.height * f)
    left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
    return img.crop((left, top, img.width - (cut_w - left), img.height - (cut_h - top)))


def _rotate(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate and cut back to the largest centred frame without blank corners."""
    out = img.rotate(degrees, resample=Image.Resampling.BICUBIC)
    rad = np.radians(abs(degrees))
    f = 1 / (np.cos(rad) + np.sin(rad) * max(img.width, img.height) / min(img.width, img.height))
    w, h = int(img.width * f), int(img.height * f)
    return out.crop(((img.width - w) // 2, (img.height - h) // 2, (img.width + w) // 2, (img.height + h) // 2))


def _watermark(img: Image.Image) -> Image.Image:
    out = img.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = out.size
    draw.rectangle((w * 0.62, h * 0.82, w * 0.97, h * 0.95), fill=(255, 255, 255, 110))
    for k in range(3):
        draw.text((w * 0.64, h * (0.83 + 0.04 * k)), "(c) dupflow stock 2026", fill=(20, 20, 20, 200))
    return Image.alpha_composite(out, layer).convert("RGB")


def _combo(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = _crop(img, 0.1, rng)
    out = out.resize((max(16, int(out.width * 0.7)), max(16, int(out.height * 0.7))), Image.Resampling.BILINEAR)
    return _jpeg(ImageEnhance.Brightness(out).enhance(1.15), 50)


# name -> (transform, file format)
Transform = Callable[[Image.Image, np.random.Generator], Image.Image]
TRANSFORMS: dict[str, tuple[Transform, str]] = {
    "re-encode jpeg q30": (lambda i, _r: _jpeg(i, 30), "JPEG"),
    "resize 50%": (lambda i, _r: i.resize((max(16, i.width // 2), max(16, i.height // 2)), Image.Resampling.BILINEAR),
                   "JPEG"),
    "crop 5%": (lambda i, r: _crop(i, 0.05, r), "JPEG"),
    "crop 10%": (lambda i, r: _crop(i, 0.10, r), "JPEG"),
    "crop 20%": (lambda i, r: _crop(i, 0.20, r), "JPEG"),
    "rotate 3deg": (lambda i, _r: _rotate(i, 3), "JPEG"),
    "rotate 90": (lambda i, _r: i.transpose(Image.Transpose.ROTATE_90), "JPEG"),
    "flip": (lambda i, _r: i.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG"),
    "saturation +50%": (lambda i, _r: ImageEnhance.Color(i).enhance(1.5), "JPEG"),
    "brightness/contrast": (lambda i, _r: ImageEnhance.Contrast(ImageEnhance.Brightness(i).enhance(1.2)).enhance(1.3),
                            "JPEG"),
    "blur": (lambda i, _r: i.filter(ImageFilter.GaussianBlur(2)), "JPEG"),
    "watermark": (lambda i, _r: _watermark(i), "JPEG"),
    "grayscale": (lambda i, _r: i.convert("L").convert("RGB"), "JPEG"),
    "webp": (lambda i, _r: i, "WEBP"),
    "png": (lambda i, _r: i, "PNG"),
    "crop+resize+jpeg+brightness": (_combo, "JPEG"),
}
_EXT = {"JPEG": "jpg", "WEBP": "webp", "PNG": "png"}


def _save(img: Image.Image, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))


def build(root: Path, seed: int) -> list[dict[str, str]]:
    """Write the set; one label row per file: family (its base), kind and transform."""
    rng = np.random.default_rng(seed)
    labels = []
    bases: list[tuple[str, Image.Image]] = []
    for name, photo in photographs().items():
        bases.append((name, photo))
        w, h = photo.width // 2, photo.height // 2
        bases += [(f"{name}-tile{x}{y}", photo.crop((x * w, y * h, (x + 1) * w, (y + 1) * h)))
                  for x in range(2) for y in range(2)]
    for family, img in bases:
        _save(img, root / family / "base.jpg", "JPEG")
        labels.append({"path": f"{family}/base.jpg", "family": family, "kind": "base", "transform": ""})
        for t, (fn, fmt) in TRANSFORMS.items():
            rel = f"{family}/{t.replace(' ', '_').replace('/', '_').replace('%', 'pc')}.{_EXT[fmt]}"
            _save(fn(img, rng), root / rel, fmt)
            labels.append({"path": rel, "family": family, "kind": "variant", "transform": t})
    # hard negatives: two crops of a photograph sharing <= 30% of their area, in both directions
    for name, photo in photographs().items():
        w, h = photo.size
        for axis in ("x", "y"):
            span = w if axis == "x" else h
            size = int(span * 0.56)  # two crops at both ends: overlap 0.12 of the span = 21% of a crop
            for end, start in (("a", 0), ("b", span - size)):
                box = (start, 0, start + size, h) if axis == "x" else (0, start, w, start + size)
                rel = f"hardneg/{name}-{axis}{end}.jpg"
                _save(photo.crop(box), root / rel, "JPEG")
                labels.append({"path": rel, "family": f"hardneg:{name}-{axis}{end}", "kind": "hard_negative",
                               "transform": f"{name}-{axis}"})
    import skimage.data as sk

    for side in ("left", "right"):
        rel = f"hardneg/motorcycle-{side}.jpg"
        _save(Image.fromarray(sk.stereo_motorcycle()[0 if side == "left" else 1]), root / rel, "JPEG")
        labels.append({"path": rel, "family": f"hardneg:motorcycle-{side}", "kind": "hard_negative",
                       "transform": "motorcycle"})
    return labels


def encode(root: Path, store: Path, encoders: tuple[str, ...], workers: int) -> tuple[float, int]:
    shutil.rmtree(store, ignore_errors=True)
    start = time.perf_counter()
    report = run_encode([DatasetSource("bench", str(root))], str(store), EncodeSettings(encoders=encoders),
                        workers=workers)
    return time.perf_counter() - start, report.encoded


def accepted(rule_text: str, words: dict[str, np.ndarray], exact: np.ndarray,
             vectors: np.ndarray) -> set[tuple[int, int]]:
    """Every pair (i < j) some rule of `rule_text` accepts, by brute force over all pairs."""
    found: set[tuple[int, int]] = set()
    for rule in parse_rules([rule_text]):
        ok: set[tuple[int, int]] | None = None
        for cond in rule.conditions:
            if cond.cosine:
                p = cosine_pairs(vectors, cond.min_similarity)
                pairs = set(zip(p.i.tolist(), p.j.tolist(), strict=True))
            elif cond.metric == "exact":
                _, inverse = np.unique(exact, return_inverse=True)
                pairs = {(i, j) for i in range(len(exact)) for j in np.flatnonzero(inverse == inverse[i]) if j > i}
            else:
                a, b, _ = brute_force_pairs(words[cond.metric], cond.max_distance)
                pairs = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)}
            ok = pairs if ok is None else ok & pairs
        found |= ok or set()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="evaluate the files and stores of the last run again")
    parser.add_argument("--rules", nargs="*", help="rules to compare (default: the sweep below)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "embeddings.md")
    args = parser.parse_args()
    root = WORK / f"embed-{args.seed}"
    timing = root / "timing.json"
    if not (args.reuse and timing.exists()):
        shutil.rmtree(root, ignore_errors=True)
        labels = build(root, args.seed)
        print(f"{len(labels)} files in {root}")
        hash_s, n = encode(root, WORK / "embed-store-hash", ("phash", "dhash"), args.workers)
        all_s, _ = encode(root, WORK / "embed-store", ("phash", "dhash", "cnn"), args.workers)
        timing.write_text(json.dumps({"labels": labels, "hash_s": hash_s, "all_s": all_s, "n": n}))
    saved = json.loads(timing.read_text())
    labels, hash_s, all_s, n = saved["labels"], saved["hash_s"], saved["all_s"], saved["n"]
    table = EncodingsStore(str(WORK / "embed-store")).read()
    table = table.filter(pc.is_null(table["error"])).sort_by("uri")
    rel = [os.path.relpath(u, root) for u in table["uri"].to_pylist()]
    by_path = {lab["path"]: lab for lab in labels}
    meta = [by_path[r] for r in rel]
    family = np.array([m["family"] for m in meta])
    words = {m: as_words(table[m]) for m in ("phash", "dhash")}
    exact = np.array([bytes(x) for x in table["exact"].to_pylist()], dtype=object)
    vectors = embeddings_from_store(table).vectors
    base_ix = {m["family"]: i for i, m in enumerate(meta) if m["kind"] == "base"}
    # positives: every pair within a family; what each transform contributes: its (base, variant) pair
    by_transform: dict[str, list[tuple[int, int]]] = {}
    for i, m in enumerate(meta):
        if m["kind"] == "variant":
            b = base_ix[m["family"]]
            by_transform.setdefault(m["transform"], []).append((min(b, i), max(b, i)))
    positives = {(i, j) for i in range(len(meta)) for j in range(i + 1, len(meta)) if family[i] == family[j]}
    hard = {(i, j) for i in range(len(meta)) for j in range(i + 1, len(meta))
            if meta[i]["kind"] == meta[j]["kind"] == "hard_negative" and meta[i]["transform"] == meta[j]["transform"]}
    n_pairs = len(meta) * (len(meta) - 1) // 2
    sweep = args.rules or ["exact|phash<=8", "exact|phash<=10", "exact|phash<=12", "exact|dhash<=10",
             *(f"cosine>={c}" for c in ("0.85", "0.88", "0.9", "0.92", "0.94", "0.96")),
             "exact|phash<=10|cosine>=0.9", "exact|phash<=10|cosine>=0.92", "exact|phash<=10|cosine>=0.94",
             "exact|(dhash<=10&cosine>=0.85)", "exact|phash<=10|(phash<=20&cosine>=0.85)|cosine>=0.94",
             "exact|phash<=10|(phash<=22&cosine>=0.84)|cosine>=0.93",
             "exact|phash<=10|(dhash<=20&cosine>=0.85)|cosine>=0.93"]
    results = {}
    for text in sweep:
        got = accepted(text, words, exact, vectors)
        tp = len(got & positives)
        results[text] = {
            "precision": tp / len(got) if got else 1.0, "recall": tp / len(positives),
            "false_pairs": len(got - positives), "hard_negative_pairs": len(got & hard),
            "per_transform": {t: float(np.mean([p in got for p in ps])) for t, ps in by_transform.items()},
        }
    for r in results.values():
        r["f1"] = 2 * r["precision"] * r["recall"] / max(r["precision"] + r["recall"], 1e-12)
    lines = [f"# Hashes vs CNN embeddings vs combined rules ({time.strftime('%Y-%m-%d')})", "",
             f"{len(meta)} files: {len(base_ix)} bases (photographs of scikit-learn and scikit-image, whole and as "
             f"2x2 tiles) x {len(TRANSFORMS)} transforms, plus {sum(m['kind'] == 'hard_negative' for m in meta)} "
             f"hard negatives ({len(hard)} pairs); {len(positives):,} true pairs among {n_pairs:,}. "
             f"Command: `.venv/bin/python bench/embeddings.py --seed {args.seed}`; 2 cores.", "",
             "## Encoding throughput (dupflow `run_encode`, 2 processes, whole pipeline)", "",
             "| encoders | seconds | images/s |", "|---|---:|---:|",
             f"| phash+dhash | {hash_s:.1f} | {n / hash_s:.1f} |",
             f"| phash+dhash+cnn (EfficientNet-Lite0) | {all_s:.1f} | {n / all_s:.1f} |", "",
             "## Rules: pair precision, recall, F1", "",
             "| rule | precision | recall | F1 | false pairs | hard-negative pairs |", "|---|---:|---:|---:|---:|---:|"]
    for text, r in results.items():
        lines.append(f"| `{text}` | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['false_pairs']} | "
                     f"{r['hard_negative_pairs']} of {len(hard)} |")
    lines += ["", "## Recall per transform (the variant paired with its base)", "",
              "| transform | " + " | ".join(f"`{t}`" for t in sweep) + " |", "|---" * (len(sweep) + 1) + "|"]
    for t in TRANSFORMS:
        lines.append(f"| {t} | " + " | ".join(f"{results[s]['per_transform'][t]:.0%}" for s in sweep) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"files": len(meta), "results": results}, indent=1))


if __name__ == "__main__":
    main()
