"""Deterministic, natural-looking test images (smooth fields, edges and texture, not pure noise)."""

from __future__ import annotations

import importlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def natural(seed: int, width: int = 320, height: int = 240) -> Image.Image:
    """A photo-like RGB picture: low-frequency colour field, a few shapes, mild grain."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(4):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.08, 0.3) * min(width, height)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
        base[mask] = base[mask] * 0.4 + rng.uniform(0, 255, 3) * 0.6
    base += rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def detailed(seed: int, width: int = 640, height: int = 480) -> Image.Image:
    """A picture with detail everywhere (many overlapping shapes of every size and colour), as a
    photograph of a busy scene has: local features find corners in every part of it."""
    rng = np.random.default_rng(seed)
    picture = natural(seed, width, height)
    draw = ImageDraw.Draw(picture)
    for _ in range(220):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        size = rng.uniform(4, 40)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (x, y, x + size * rng.uniform(0.5, 2), y + size * rng.uniform(0.5, 2))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle(box, fill=colour)
        elif shape == 1:
            draw.ellipse(box, fill=colour)
        else:
            points = [(x + rng.uniform(-size, size), y + rng.uniform(-size, size)) for _ in range(3)]
            draw.polygon(points, fill=colour)
    return picture


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    """The image's bytes in `fmt`."""
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def write(path: Path, image: Image.Image, fmt: str | None = None, **kwargs: object) -> Path:
    """Save `image` at `path` (format from the extension unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return path


def dataset(root: Path, n: int, seed: int = 0, size: tuple[int, int] = (160, 120)) -> list[Path]:
    """`n` distinct JPEGs in nested folders under `root`."""
    out = []
    for i in range(n):
        out.append(write(root / f"sub{i % 3}" / f"img_{i:04d}.jpg", natural(seed * 100_000 + i, *size), quality=90))
    return out


def multi_picture(first: Image.Image, *others: Image.Image, quality: int = 90) -> bytes:
    """An MPO (the multi-picture JPEG of stereo cameras and some phones): `first`, then `others`."""
    return encode(first, "MPO", save_all=True, append_images=list(others), quality=quality)


def heic(image: Image.Image, quality: int = 95) -> bytes:
    """`image` as HEIC through pillow-heif (which callers check is installed), without registering it
    with Pillow: what a phone writes."""
    pillow_heif = importlib.import_module("pillow_heif")  # optional (`dupflow[heif]`): typed only where installed
    buf = io.BytesIO()
    pillow_heif.from_pillow(image).save(buf, quality=quality)
    return buf.getvalue()
