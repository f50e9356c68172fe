"""Mixed-size JPEG photographs for the speed benchmarks, built from photos that packages ship.

Sources (recorded in the output's SOURCES.txt): scikit-learn's `china.jpg` and `flower.jpg`
(shipped in the scikit-learn wheel; both CC BY 2.0, by danielbuechele and vultilion on Flickr), and
scikit-image's bundled photos when scikit-image is installed. Each output is a random crop,
resized to a camera-like size (640x480 ... 4000x3000), with mild sensor-like grain so the JPEG
entropy (and so the decode cost) resembles a real photograph, saved at quality 80-95.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(640, 480), (1024, 768), (1280, 960), (1920, 1080), (2048, 1536), (3000, 2000), (4000, 3000)]


def source_photos() -> list[tuple[str, Image.Image]]:
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    named = zip(data.filenames, data.images, strict=True)
    photos = [(f"scikit-learn:{Path(n).name}", Image.fromarray(a)) for n, a in named]
    try:
        import skimage.data as sk

        for name in ("astronaut", "coffee", "chelsea", "rocket"):
            photos.append((f"scikit-image:{name}", Image.fromarray(getattr(sk, name)()).convert("RGB")))
    except (ImportError, OSError):  # optional source: scikit-image missing, or its data files unavailable
        pass
    return photos


def make(out: Path, n: int, seed: int = 0, sizes: list[tuple[int, int]] | None = None) -> Path:
    """Write `n` JPEGs into `out` (kept between runs: same seed, same files), of `sizes` (default SIZES)."""
    marker = out / f".done-{n}-{seed}"
    if marker.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = source_photos()
    for i in range(n):
        _, photo = photos[i % len(photos)]
        w, h = (sizes or SIZES)[int(rng.integers(len(sizes or SIZES)))]
        cw, ch = int(photo.width * rng.uniform(0.5, 1.0)), int(photo.height * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, photo.width - cw + 1)), int(rng.integers(0, photo.height - ch + 1))
        img = photo.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(img, np.float32) + rng.normal(0, 4, (h, w, 1)).astype(np.float32)
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
            out / f"photo_{i:05d}.jpg", quality=int(rng.integers(80, 96))
        )
    (out / "SOURCES.txt").write_text("\n".join(sorted({n for n, _ in photos})) + "\n")
    marker.touch()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make(args.out, args.n, args.seed))
