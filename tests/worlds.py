"""Generated datasets with known copies, shared by the matching and flow tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageEnhance

from dupflow.encode.settings import EncodeSettings
from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import run_encode
from imagegen import natural, write

__all__ = ["World", "brighter", "build_world", "halved", "plant_world"]


@dataclass
class World:
    """Two datasets with known copies: `within` pairs inside one dataset, `leaks` train -> val."""

    root: Path
    store: str
    within: list[tuple[Path, Path]] = field(default_factory=list)
    leaks: list[tuple[Path, Path]] = field(default_factory=list)
    distinct: list[Path] = field(default_factory=list)


def halved(img: Image.Image) -> Image.Image:
    return img.resize((img.width // 2, img.height // 2), Image.Resampling.BILINEAR)


def brighter(img: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(1.15)


def plant_world(root: Path) -> World:
    """Write the two datasets (root/train, root/val) with their planted copies; encode nothing."""
    world = World(root, str(root / "store"))
    train, val = root / "train", root / "val"
    pictures = {i: natural(1000 + i, 320, 240) for i in range(40)}
    for i in range(30):
        world.distinct.append(write(train / f"c{i % 3}" / f"t{i:02d}.jpg", pictures[i], quality=92))
    for i in range(30, 40):
        world.distinct.append(write(val / f"v{i:02d}.jpg", pictures[i], quality=92))
    t = world.distinct
    # inside train: a byte copy, a half-size PNG, a recompression
    copy = train / "copies" / "t00_copy.jpg"
    copy.parent.mkdir(parents=True)
    shutil.copy(t[0], copy)
    world.within += [(t[0], copy),
                     (t[1], write(train / "copies" / "t01_half.png", halved(pictures[1]))),
                     (t[2], write(train / "copies" / "t02_q60.jpg", pictures[2], quality=60))]
    # inside val: a brightened copy
    world.within.append((t[30], write(val / "v30_bright.jpg", brighter(pictures[30]), quality=92)))
    # leaks from train into val: resized, byte copy, brightened
    leak = val / "leak"
    leak.mkdir()
    shutil.copy(t[4], leak / "t04.jpg")
    world.leaks += [(t[3], write(leak / "t03_half.jpg", halved(pictures[3]), quality=90)),
                    (t[4], leak / "t04.jpg"),
                    (t[5], write(leak / "t05_bright.jpg", brighter(pictures[5]), quality=90))]
    (train / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return world


def build_world(root: Path, encoders: tuple[str, ...] = ("phash", "dhash"), shard_size: int | None = None) -> World:
    """The planted datasets, encoded into root/store."""
    world = plant_world(root)
    sources = [DatasetSource("train", str(root / "train")), DatasetSource("val", str(root / "val"))]
    run_encode(sources, world.store, EncodeSettings(encoders=encoders, shard_size=shard_size))
    return world
