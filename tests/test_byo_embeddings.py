"""Bring-your-own embeddings: joined on uri, matched by cosine rules exactly like brute force, and
every malformed file refused with a message that names the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError
from dupflow.index import Block
from dupflow.io.sources import DatasetSource
from dupflow.match.embeddings import Embeddings, embeddings_from_file, read_embeddings_file
from dupflow.match.job import match_store
from dupflow.match.matching import Images, prepare_search
from dupflow.match.rules import parse_rule
from dupflow.match.settings import MatchSettings
from dupflow.store.encode_job import run_encode
from dupflow.store.encodings import EncodingsStore
from imagegen import dataset

DIM = 48


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("byo")
    dataset(root / "train", 30, seed=1)
    dataset(root / "val", 12, seed=2)
    url = str(root / "store")
    run_encode([DatasetSource("train", str(root / "train")), DatasetSource("val", str(root / "val"))], url,
               EncodeSettings(encoders=("phash",)))
    return url


def _uris(store: str) -> list[str]:
    table = EncodingsStore(store).read(["uri", "dataset"]).sort_by([("dataset", "ascending"), ("uri", "ascending")])
    return [str(u) for u in table["uri"].to_pylist()]


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    """Random directions, with near-copies planted: every 5th row is a small perturbation of the previous."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, DIM))
    for i in range(1, n, 5):
        v[i] = v[i - 1] + rng.normal(scale=0.25, size=DIM)
    return v


def _write(path: Path, uris: list[str], rows: Any, column: str = "clip", kind: pa.DataType | None = None) -> str:
    pq.write_table(pa.table({"uri": pa.array(uris, pa.string()),
                             column: pa.array([None if r is None else list(r) for r in rows],
                                              kind or pa.list_(pa.float32()))}), path)
    return str(path)


def _pairs(out: Path) -> set[tuple[str, str]]:
    return {(r["a"], r["b"]) for r in pq.read_table(out / "pairs.parquet").to_pylist()}


def test_cosine_rule_on_your_embeddings_equals_brute_force(store: str, tmp_path: Path) -> None:
    uris = _uris(store)
    v = _vectors(len(uris))
    emb = _write(tmp_path / "emb.parquet", uris[::-1], v[::-1])  # row order must not matter
    report = match_store(store, str(tmp_path / "out"), MatchSettings(
        rules=("cosine>=0.9",), embeddings=emb, embed_col_name="clip"))
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    sims = unit @ unit.T
    want = {(uris[i], uris[j]) for i in range(len(uris)) for j in range(i + 1, len(uris)) if sims[i, j] >= 0.9}
    assert len(want) >= 5
    assert _pairs(tmp_path / "out") == want
    rows = pq.read_table(tmp_path / "out" / "pairs.parquet").to_pylist()
    similarity = {(r["a"], r["b"]): r["similarity"] for r in rows}
    for a, b in want:
        assert abs(similarity[(a, b)] - sims[uris.index(a), uris.index(b)]) < 1e-5
    assert report.summary["settings"]["embeddings"] == {
        "source": f"{emb}#clip", "dimensions": DIM, "images": len(uris), "missing": 0, "missing_examples": [],
        "unknown_uris": 0}


def test_float16_embeddings_are_held_as_float16_and_float32_ones_as_float32(store: str, tmp_path: Path) -> None:
    uris = _uris(store)
    v = _vectors(len(uris), seed=3)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    sims = unit @ unit.T
    found = {}
    for kind in (pa.float16(), pa.float32()):
        path = _write(tmp_path / f"{kind}.parquet", uris, v.astype(np.float16 if kind == pa.float16() else np.float32),
                      kind=pa.list_(kind, DIM))
        held = embeddings_from_file(pa.array(uris), read_embeddings_file(path, "clip"), "clip", path)
        assert held.vectors.dtype == (np.float16 if kind == pa.float16() else np.float32)
        assert held.vectors.nbytes == len(uris) * DIM * held.vectors.itemsize
        match_store(store, str(tmp_path / f"out-{kind}"), MatchSettings(
            rules=("cosine>=0.9",), embeddings=path, embed_col_name="clip"))
        rows = pq.read_table(tmp_path / f"out-{kind}" / "pairs.parquet").to_pylist()
        found[str(kind)] = {(r["a"], r["b"]): r["similarity"] for r in rows}
    assert found["halffloat"].keys() == found["float"].keys()
    assert len(found["float"]) >= 5
    for (a, b), similarity in found["halffloat"].items():  # float16 values, rounded again as unit rows
        assert abs(similarity - sims[uris.index(a), uris.index(b)]) < 2e-3


def test_a_cosine_condition_after_a_hash_is_computed_in_float32_on_float16_rows() -> None:
    n, dim = 200, 1280
    rng = np.random.default_rng(5)
    v = rng.normal(size=(n, dim))
    v[1::2] = v[::2] + rng.normal(scale=0.4, size=(n // 2, dim))  # pairs near cosine 0.93
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    half = unit.astype(np.float16)
    table = pa.table({"uri": [f"u{i:03d}" for i in range(n)], "phash": pa.array(np.zeros(n, np.uint64))})
    images = Images(table, ("d",), np.zeros(n, np.int64), np.zeros(n, bool),
                    Embeddings(half, np.ones(n, bool), "test"))
    search = prepare_search(images, parse_rule("phash<=10&cosine>=0.5"))  # one phash: every pair a candidate
    found = search.finish([search.block(Block(0, 1))]).pairs
    a, b = search.reps[found.c1], search.reps[found.c2]
    widened = np.einsum("ij,ij->i", half[a].astype(np.float64), half[b].astype(np.float64))
    assert len(a) >= n // 2
    assert np.abs(found.similarity - widened).max() < 1e-6  # float32 sums of float16 rows, not float16 ones


def test_reference_datasets_are_matched_across_only(store: str, tmp_path: Path) -> None:
    uris = _uris(store)
    v = _vectors(len(uris), seed=3)
    n_train = 30
    v[n_train + 2] = v[4] + 0.01  # a val picture near a train picture
    emb = _write(tmp_path / "emb.parquet", uris, v)
    match_store(store, str(tmp_path / "out"), MatchSettings(
        rules=("cosine>=0.9",), embeddings=emb, embed_col_name="clip", datasets=("val", "train"), reference=("train",)))
    found = _pairs(tmp_path / "out")
    assert (uris[n_train + 2], uris[4]) in found or (uris[4], uris[n_train + 2]) in found
    train = set(uris[:n_train])
    assert not any(a in train and b in train for a, b in found)  # never within the reference


def test_combined_rules_need_every_condition(store: str, tmp_path: Path) -> None:
    uris = _uris(store)
    v = _vectors(len(uris), seed=4)
    emb = _write(tmp_path / "emb.parquet", uris, v)
    settings = MatchSettings(embeddings=emb, embed_col_name="clip")
    match_store(store, str(tmp_path / "cos"), settings.model_copy(update={"rules": ("cosine>=0.9",)}))
    match_store(store, str(tmp_path / "both"),
                settings.model_copy(update={"rules": ("exact | (phash<=4 & cosine>=0.9)",)}))
    cos = _pairs(tmp_path / "cos")
    assert cos
    assert not _pairs(tmp_path / "both")


@pytest.mark.parametrize(
    ("rows", "kind", "message"),
    [
        ("short_row", None, "rows have 40, 48 dimensions"),
        ("nan", None, "NaN or infinite"),
        ("zero", None, "all zero"),
        ("strings", pa.list_(pa.string()), "must be a list of floats"),
        ("missing", None, "have no embedding"),
        ("twice", None, "more than once"),
    ],
)
def test_malformed_embeddings_are_refused_clearly(store: str, tmp_path: Path, rows: str, kind: pa.DataType | None,
                                                 message: str) -> None:
    uris = _uris(store)
    v: list[Any] = list(_vectors(len(uris)))
    if rows == "short_row":
        v[7] = v[7][:40]
    elif rows == "nan":
        v[3] = np.full(DIM, np.nan)
    elif rows == "zero":
        v[3] = np.zeros(DIM)
    elif rows == "strings":
        v = [[str(x) for x in r] for r in v]
    elif rows == "missing":
        uris, v = uris[:-2], v[:-2]
    elif rows == "twice":
        uris, v = [*uris, uris[0]], [*v, v[0]]
    emb = _write(tmp_path / "emb.parquet", uris, v, kind=kind)
    with pytest.raises(ConfigError, match=message):
        match_store(store, str(tmp_path / "out"), MatchSettings(rules=("cosine>=0.9",), embeddings=emb,
                                                                embed_col_name="clip"))


def test_missing_rows_can_be_allowed_and_are_reported(store: str, tmp_path: Path) -> None:
    uris = _uris(store)
    emb = _write(tmp_path / "emb.parquet", [*uris[3:], "/elsewhere/x.jpg"], _vectors(len(uris) - 2))
    report = match_store(store, str(tmp_path / "out"), MatchSettings(
        rules=("cosine>=0.9",), embeddings=emb, embed_col_name="clip", allow_missing_embeddings=True))
    described = report.summary["settings"]["embeddings"]
    assert (described["missing"], described["unknown_uris"]) == (3, 1)
    assert described["missing_examples"] == uris[:3]
    assert not any(a in uris[:3] or b in uris[:3] for a, b in _pairs(tmp_path / "out"))


def test_a_wrong_column_or_file_names_what_exists(store: str, tmp_path: Path) -> None:
    emb = _write(tmp_path / "emb.parquet", _uris(store), _vectors(len(_uris(store))), column="vec")
    with pytest.raises(ConfigError, match=r"no column clip \(it has: uri, vec\)"):
        match_store(store, str(tmp_path / "o"), MatchSettings(rules=("cosine>=0.9",), embeddings=emb,
                                                              embed_col_name="clip"))
    with pytest.raises(ConfigError, match="does not exist"):
        match_store(store, str(tmp_path / "o"), MatchSettings(rules=("cosine>=0.9",),
                                                              embeddings=str(tmp_path / "nope.parquet")))
    with pytest.raises(ConfigError, match=r"needs embeddings|no cnn encodings"):
        match_store(store, str(tmp_path / "o"), MatchSettings(rules=("cosine>=0.9",)))
