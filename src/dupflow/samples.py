"""A small sample image set built from the photographs scikit-learn ships (no download).

Two datasets (`train`, `val`) of pictures cut from two real photos, with planted exact copies,
resized, brightened and mirrored near-duplicates, a train/val leak and a corrupt file, and the truth
of what was planted (`truth.csv`): enough to see every part of dupflow work on a laptop in seconds.

Crops of only two photographs resemble each other, so each base picture is a crop at its own scale,
lit by its own random pattern of light and shade and tinted: that changes its pHash as a whole while
it still looks like a photograph. The set is then checked with dupflow's own encoder: a candidate base
is drawn again until every file of its group is more than `GAP` bits from every file planted before,
in every orientation, and each of its copies is within `NEAR` bits of it. So `dupflow match --rule
'exact | phash<=10' --orientations` finds exactly the planted groups. The default also verifies looser
and cropped candidates, and so groups some bases cut from overlapping parts of one photograph: they share
that part, as verification shows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from dupflow.encode.encoding import encode_refs
from dupflow.encode.settings import EncodeSettings
from dupflow.io.listing import ImageRef

__all__ = ["GAP", "NEAR", "SOURCES", "TRUTH_FILE", "PlantedFile", "SampleSet", "write_sample_set"]

SOURCES = ("scikit-learn sample images china.jpg (danielbuechele, Flickr) and flower.jpg (vultilion, Flickr), "
           "both CC BY 2.0; see sklearn/datasets/images/README.txt")
TRUTH_FILE = "truth.csv"
GAP = 12  # files of different planted groups differ by more than this many pHash bits, in every orientation
NEAR = 8  # every planted copy is within this many bits of its base (the default rule accepts 10)
_ATTEMPTS = 200  # candidates drawn for one base before giving up

# the copies planted of the first quarter of the bases, in turn: kind, file suffix, how it is made
_Save = Callable[[Image.Image], bytes]
_COPIES: tuple[tuple[str, str, _Save | None], ...] = (
    ("exact_copy", "_copy.jpg", None),  # the base's own bytes
    ("resized", "_small.png", lambda im: _encoded(im.resize((im.width // 2, im.height // 2)), "PNG")),
    ("brightened", "_bright.jpg", lambda im: _encoded(ImageEnhance.Brightness(im).enhance(1.15), "JPEG", 75)),
    ("mirrored", "_mirror.jpg", lambda im: _encoded(ImageOps.mirror(im), "JPEG", 90)),
)
_LEAKED = range(1, 4)  # training bases re-encoded into val/leaked/


@dataclass(frozen=True)
class PlantedFile:
    """One file of the sample set: its path under the set's folder, what it is, and its planted group."""

    path: str
    kind: str
    group: int | None


@dataclass
class SampleSet:
    """What `write_sample_set` wrote and planted."""

    files: list[PlantedFile]

    def counts(self) -> dict[str, int]:
        """Files of each kind, in the order they were first written."""
        out: dict[str, int] = {}
        for f in self.files:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out

    def groups(self) -> list[list[str]]:
        """Each planted duplicate group's files, its base first: what matching should find."""
        out: dict[int, list[str]] = {}
        for f in self.files:
            if f.group is not None:
                out.setdefault(f.group, []).append(f.path)
        return list(out.values())


def write_sample_set(out: str | Path, n_base: int = 40, seed: int = 0) -> SampleSet:
    """Write `out/train`, `out/val` and `out/truth.csv` (every file with its kind and planted group)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    root = Path(out)
    planted = _Planted()
    files: list[PlantedFile] = []
    groups = 0
    for i in range(n_base):
        split = "val" if i % 5 == 0 else "train"
        base = f"{split}/class_{i % 4}/img_{i:04d}"
        copies: list[tuple[str, str, _Save | None]] = []
        if i < n_base // 4:
            kind, suffix, save = _COPIES[i % len(_COPIES)]
            copies.append((kind, base + suffix, save))
        if i in _LEAKED:
            copies.append(("leak", f"val/leaked/img_{i:04d}_leak.jpg", _leak))
        written = _plant(root, photos[i % len(photos)], rng, f"{base}.jpg", copies, planted)
        files += [PlantedFile(path, kind, groups if copies else None) for kind, path in written]
        groups += bool(copies)
    corrupt = root / "train" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    files.append(PlantedFile("train/corrupt.jpg", "corrupt", None))
    with (root / TRUTH_FILE).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "kind", "group"])
        writer.writerows([f.path, f.kind, "" if f.group is None else f.group] for f in files)
    return SampleSet(files)


def _plant(root: Path, photo: Image.Image, rng: np.random.Generator, base: str,
           copies: list[tuple[str, str, _Save | None]], planted: _Planted) -> list[tuple[str, str]]:
    """Write one base picture and its copies, drawing the picture again until the group is apart
    from everything planted and each copy still matches the base; returns (kind, path) of each file."""
    for _ in range(_ATTEMPTS):
        picture = _picture(photo, rng)
        data = _encoded(picture, "JPEG", 92)
        written = [("base", base, data)]
        written += [(kind, path, data if save is None else save(picture)) for kind, path, save in copies]
        for _kind, path, blob in written:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(blob)
        views = _views([root / path for _kind, path, _blob in written])
        if (_distance(views[:1], views[1:]) <= NEAR).all() and planted.apart(views):
            planted.add(views)
            return [(kind, path) for kind, path, _blob in written]
    raise RuntimeError(f"no base picture for {base} differs from the {planted.count} files planted before it "
                       f"after {_ATTEMPTS} tries: write fewer --images")


def _picture(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A crop of `photo` at a random place and scale, lit by an 8-by-8 pattern of light and shade and tinted."""
    w, h = int(rng.integers(200, 380)), int(rng.integers(150, 280))
    zoom = rng.uniform(1.0, min(photo.width / w, photo.height / h))
    cw, ch = int(w * zoom), int(h * zoom)
    x, y = int(rng.integers(0, photo.width - cw + 1)), int(rng.integers(0, photo.height - ch + 1))
    crop = photo.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC, reducing_gap=2.0)
    light = Image.fromarray(rng.uniform(0.15, 1.25, size=(8, 8)).astype(np.float32), mode="F")
    field = np.asarray(light.resize((w, h), Image.Resampling.BICUBIC))[..., None]
    tint = rng.uniform(0.75, 1.15, size=3).astype(np.float32)
    lit = np.asarray(crop, dtype=np.float32) * field * tint
    return Image.fromarray(np.clip(lit, 0, 255).astype(np.uint8))


def _leak(picture: Image.Image) -> bytes:
    """A training picture saved again into validation."""
    return _encoded(picture, "JPEG", 85)


def _encoded(picture: Image.Image, fmt: str, quality: int = 0) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, fmt, **({"quality": quality} if quality else {}))
    return buf.getvalue()


def _views(paths: list[Path]) -> np.ndarray:
    """Each file's pHash and its 7 mirrored and rotated pHashes (one row of 8 uint64 each), as
    `dupflow encode` computes them with its default settings."""
    refs = [ImageRef(str(p), "sample", p.name, p.stat().st_size, None, None) for p in paths]
    table, _ = encode_refs(refs, EncodeSettings(encoders=("phash", "phash_dihedral")))
    phash = np.array(table["phash"].to_pylist(), dtype=np.uint64)
    turned = np.frombuffer(b"".join(table["phash_dihedral"].to_pylist()), dtype=">u8").reshape(len(paths), 7)
    return np.concatenate([phash[:, None], turned.astype(np.uint64)], axis=1)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The least pHash distance between each row of `a` and each row of `b` over every orientation of
    either: what matching with orientations compares (an a-by-b matrix)."""
    one = np.bitwise_count(a[:, None, :1] ^ b[None, :, :]).min(axis=2)
    other = np.bitwise_count(a[:, None, :] ^ b[None, :, :1]).min(axis=2)
    least: np.ndarray = np.minimum(one, other)
    return least


class _Planted:
    """The pHash views of every file planted so far, to keep each new group apart from them."""

    def __init__(self) -> None:
        self._views = np.zeros((64, 8), np.uint64)
        self.count = 0

    def apart(self, views: np.ndarray) -> bool:
        """Whether every file of a new group is more than GAP bits from every planted file."""
        return bool((_distance(views, self._views[: self.count]) > GAP).all())

    def add(self, views: np.ndarray) -> None:
        if self.count + len(views) > len(self._views):
            self._views = np.concatenate([self._views, np.zeros_like(self._views)])
        self._views[self.count: self.count + len(views)] = views
        self.count += len(views)
