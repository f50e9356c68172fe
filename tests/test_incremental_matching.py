"""Incremental matching: over a sequence of runs with files added, removed, changed and touched, a match
that reuses the previous run's state writes byte for byte what a full match writes, while searching only
the new classes."""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dupflow.encode.settings import DEFAULT_ENCODERS, EncodeSettings
from dupflow.index.blocks import Block
from dupflow.io.sources import DatasetSource
from dupflow.match.digests import file_digests
from dupflow.match.job import OUTPUT_FILES, MatchReport, match_store
from dupflow.match.matching import Images, RuleMatch, prepare_search
from dupflow.match.rules import parse_rules
from dupflow.match.settings import MatchSettings
from dupflow.match.state import STATE_DIR, RuleState
from dupflow.store.encode_job import run_encode
from imagegen import detailed, write
from worlds import brighter

HAS_CV2 = importlib.util.find_spec("cv2") is not None


def copies(picture: Image.Image, rng: random.Random) -> list[Image.Image]:
    """A few edits of a picture: brighter, smaller, mirrored, rotated, cropped."""
    w, h = picture.size
    edits = [brighter(picture), picture.resize((w // 2, h // 2)), picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
             picture.transpose(Image.Transpose.ROTATE_90), picture.crop((w // 10, h // 10, w - w // 10, h - h // 10))]
    return rng.sample(edits, rng.randint(1, 3))


class Corpus:
    """Two dataset folders of picture families that the test edits between runs."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root, self.rng, self.next_seed = root, random.Random(seed), 100
        for name in ("train", "val"):
            (root / name).mkdir(parents=True)

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.jpg"))

    def add_families(self, n: int) -> None:
        for _ in range(n):
            seed = self.next_seed = self.next_seed + 1
            picture = detailed(seed, 256, 192)
            for k, img in enumerate([picture, *copies(picture, self.rng)]):
                folder = self.rng.choice(("train", "val"))
                write(self.root / folder / f"f{seed}-{k}.jpg", img)

    def edit(self) -> None:
        """Remove, change, touch, copy (sorting first, so a class's representative changes) and add."""
        files = self.files()
        self.rng.shuffle(files)
        for gone in files[:3]:
            gone.unlink()
        changed = files[3]
        write(changed, detailed(self.rng.randint(1000, 2000), 256, 192))
        touched = files[4]
        os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 5_000_000_000))
        kept = files[5]
        shutil.copyfile(kept, kept.parent / f"a-first-{kept.name}")  # an exact copy that sorts first
        write(kept.parent / f"near-{kept.name}", brighter(Image.open(files[6])))
        self.add_families(2)


def embed(files: list[Path], path: Path) -> None:
    """Your own embeddings: the pictures' small grey thumbnails, as unit vectors."""
    vectors = []
    for f in files:
        with Image.open(f) as img:
            x = np.asarray(img.convert("L").resize((8, 8)), np.float32).ravel() - 128
        vectors.append(x / (np.linalg.norm(x) or 1))
    pq.write_table(pa.table({"uri": [str(f) for f in files], "embedding": [v.tolist() for v in vectors]}), path)


def outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUT_FILES}


CASES: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "default rules, every orientation": (("phash", "phash_dihedral"), {}),
    "a reference dataset": (("phash", "phash_dihedral", "dhash"),
                            {"datasets": ("val", "train"), "reference": ("train",), "rules": ("exact", "dhash<=12")}),
    "your own embeddings": (("phash", "dhash"), {"rules": ("exact", "phash<=8", "cosine>=0.9&dhash<=24")}),
    "verified with local features": (("phash", "phash_dihedral", "orb"), {}),
    "the default encoders: verified orientations and crops": (DEFAULT_ENCODERS, {}),
    "crops with a reference dataset": (DEFAULT_ENCODERS, {"datasets": ("val", "train"), "reference": ("train",)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_incremental_match_writes_what_a_full_match_writes(tmp_path: Path, case: str) -> None:
    encoders, options = CASES[case]
    if "orb" in encoders and not HAS_CV2:
        pytest.skip("needs OpenCV: pip install 'dupflow[cnn]'")
    corpus = Corpus(tmp_path / "data")
    corpus.add_families(8)
    store = str(tmp_path / "store")
    embeddings = tmp_path / "embeddings.parquet"
    extra = {"embeddings": str(embeddings)} if "cosine" in " ".join(options.get("rules", ())) else {}
    common = {"duplicates_root": str(tmp_path / "moved"), **options, **extra}
    sources = [DatasetSource(name, str(corpus.root / name)) for name in ("train", "val")]
    searched: list[int] = []
    for step in range(3):
        if step:
            corpus.edit()
        if extra:
            embed(corpus.files(), embeddings)
        run_encode(sources, store, EncodeSettings(encoders=encoders))
        incremental = match_store(store, str(tmp_path / "incremental"), MatchSettings(**common))
        full = match_store(store, str(tmp_path / "full"), MatchSettings(incremental=False, **common))
        assert outputs(tmp_path / "incremental") == outputs(tmp_path / "full"), f"step {step}"
        assert full.summary["totals"]["groups"] > 0
        assert full.search["mode"] == "full"
        searched.append(_searched(incremental))
    assert searched[0] == -1  # the first run has no state to reuse
    assert all(s > 0 for s in searched[1:])  # later runs search only their new classes


def _searched(report: MatchReport) -> int:
    if report.search["mode"] != "incremental":
        return -1
    rules = report.search["rules"]
    assert all(r["searched"] < r["classes"] for r in rules)
    return sum(r["searched"] for r in rules)


def test_changed_settings_or_a_damaged_state_match_everything(tmp_path: Path) -> None:
    corpus = Corpus(tmp_path / "data")
    corpus.add_families(4)
    store, out = str(tmp_path / "store"), str(tmp_path / "out")
    sources = [DatasetSource("train", str(corpus.root / "train")), DatasetSource("val", str(corpus.root / "val"))]
    run_encode(sources, store, EncodeSettings(encoders=("phash", "phash_dihedral")))
    assert match_store(store, out, MatchSettings()).search["mode"] == "full"
    assert match_store(store, out, MatchSettings()).search["mode"] == "incremental"
    other = match_store(store, out, MatchSettings(rules=("phash<=6",)))
    assert other.search["mode"] == "full"
    assert "settings" in other.search["why"]
    for part in (tmp_path / "out" / STATE_DIR).glob("*-pairs.parquet"):
        part.write_bytes(b"not parquet")
    damaged = match_store(store, out, MatchSettings(rules=("phash<=6",)))
    assert damaged.search["mode"] == "full"
    assert "cannot be read" in damaged.search["why"]
    expected = outputs(tmp_path / "out")
    assert match_store(store, out, MatchSettings(rules=("phash<=6",))).search["mode"] == "incremental"
    assert outputs(tmp_path / "out") == expected
    states = sorted(p.name for p in (tmp_path / "out" / STATE_DIR).iterdir())
    assert len([s for s in states if s.endswith(".parquet")]) == 2  # one rule: older states are removed


def synthetic_images(rows: dict[str, tuple[str, int, bytes]], reference: str | None) -> Images:
    """Images from (dataset, phash, dihedral pHashes) by uri, sorted as the matcher sorts them."""
    order = sorted(rows, key=lambda u: (rows[u][0], u))
    datasets = tuple(sorted({d for d, _, _ in rows.values()}))
    table = pa.table({
        "uri": pa.array(order, pa.string()),
        "size": pa.array([1] * len(order), pa.int64()),
        "mtime": pa.array([0] * len(order), pa.timestamp("ns", tz="UTC")),
        "etag": pa.array([None] * len(order), pa.string()),
        "phash": pa.array([rows[u][1] for u in order], pa.uint64()),
        "phash_dihedral": pa.array([rows[u][2] for u in order], pa.binary(56)),
    })
    dataset_ix = np.array([datasets.index(rows[u][0]) for u in order], np.int64)
    return Images(table, datasets, dataset_ix, np.array([rows[u][0] == reference for u in order]))


def search_all(images: Images, previous: RuleState | None = None) -> RuleMatch:
    search = prepare_search(images, parse_rules(("phash<=10",))[0], orientations=True,
                            rows=file_digests(images.table), previous=previous)
    return search.finish([search.block(Block(k, 3)) for k in range(3)])


@pytest.mark.parametrize("reference", [None, "b"])
def test_incremental_search_finds_every_pair_a_full_search_finds(reference: str | None) -> None:
    """Clustered hashes whose mirrored and rotated pHashes match others at different distances in each
    direction, as real ones do; each run adds, removes and changes rows and copies one to sort first."""
    rng = np.random.default_rng(5)
    centres = rng.integers(0, 2**63, 40, dtype=np.uint64)

    def near(value: int, bits: int) -> int:
        for b in rng.choice(64, bits, replace=False):
            value ^= 1 << int(b)
        return value

    def row() -> tuple[str, int, bytes]:
        phash = near(int(rng.choice(centres)), int(rng.integers(0, 9)))
        views = [near(int(rng.choice(centres)), int(rng.integers(0, 8))) if rng.random() < 0.3
                 else int(rng.integers(0, 2**63)) for _ in range(7)]
        return str(rng.choice(["a", "b"])), phash, b"".join(v.to_bytes(8, "big") for v in views)

    rows = {f"u{k:04d}": row() for k in range(400)}
    state = search_all(synthetic_images(rows, reference)).state()
    for _ in range(4):
        for uri in rng.choice(sorted(rows), 12, replace=False):
            del rows[uri]
        for uri in rng.choice(sorted(rows), 6, replace=False):
            rows[str(uri)] = row()  # changed in place
        rows["a" + str(rng.choice(sorted(rows)))] = rows[str(rng.choice(sorted(rows)))]  # sorts first
        rows.update({f"n{rng.integers(10**9)}": row() for _ in range(20)})
        images = synthetic_images(rows, reference)
        incremental, full = search_all(images, state), search_all(images)
        assert incremental.search.searched < len(incremental.search.reps) / 4
        for name in ("c1", "c2", "distance", "similarity", "orientation"):
            assert np.array_equal(getattr(incremental.pairs, name), getattr(full.pairs, name)), name
        assert len(full.pairs) > 100
        state = incremental.state()
