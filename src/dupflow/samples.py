"""A small sample image set built from the photographs scikit-learn ships (no download).

Two datasets (`train`, `val`) of crops of two real photos, with planted exact copies, re-encoded
and resized near-duplicates, a train/val leak, and a corrupt file: enough to see every part of
dupflow work on a laptop in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

__all__ = ["write_sample_set"]

SOURCES = ("scikit-learn sample images china.jpg (danielbuechele, Flickr) and flower.jpg (vultilion, Flickr), "
           "both CC BY 2.0; see sklearn/datasets/images/README.txt")


def write_sample_set(out: str | Path, n_base: int = 40, seed: int = 0) -> dict[str, int]:
    """Write `out/train` and `out/val`; returns how many files of each kind were written."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    root = Path(out)
    counts = {"base": 0, "exact_copy": 0, "near_duplicate": 0, "leak": 0, "corrupt": 0}
    bases = []
    for i in range(n_base):
        photo = photos[i % len(photos)]
        w, h = int(rng.integers(200, 380)), int(rng.integers(150, 280))
        x, y = int(rng.integers(0, photo.width - w)), int(rng.integers(0, photo.height - h))
        crop = photo.crop((x, y, x + w, y + h))
        split = "val" if i % 5 == 0 else "train"
        path = root / split / f"class_{i % 4}" / f"img_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, quality=92)
        bases.append((crop, path))
        counts["base"] += 1
    for j, (crop, path) in enumerate(bases[: n_base // 4]):
        kind = j % 3
        if kind == 0:
            (path.parent / f"{path.stem}_copy.jpg").write_bytes(path.read_bytes())
            counts["exact_copy"] += 1
        elif kind == 1:
            crop.resize((crop.width // 2, crop.height // 2)).save(path.parent / f"{path.stem}_small.png")
            counts["near_duplicate"] += 1
        else:
            ImageEnhance.Brightness(crop).enhance(1.15).save(path.parent / f"{path.stem}_bright.jpg", quality=75)
            counts["near_duplicate"] += 1
    for crop, path in bases[1:4]:  # training images that leaked into validation
        leak = root / "val" / "leaked" / f"{path.stem}_leak.jpg"
        leak.parent.mkdir(parents=True, exist_ok=True)
        crop.save(leak, quality=85)
        counts["leak"] += 1
    (root / "train" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    counts["corrupt"] += 1
    return counts
