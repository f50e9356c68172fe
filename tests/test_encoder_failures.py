"""Our bugs are not the file's fault: an encoder that raises records `encoder_failed`, which the next run
retries, while bad files keep their own kinds; a new encoder version re-encodes the rows it made."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dupflow.encode import cnn, encoding
from dupflow.encode.encoding import encode_refs
from dupflow.encode.hashing import ENCODERS
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import StoreError
from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import EncodeReport, encode_shard, list_sources, prepare_encode, run_encode
from dupflow.store.encodings import EncodingsStore
from dupflow.store.merging import merge_stores
from imagegen import dataset, encode, natural, write

ODD_WIDTH = 97  # the picture the buggy encoder fails on


def _encode(data: Path, store: Path, name: str = "train") -> EncodeReport:
    return run_encode([DatasetSource(name, str(data))], str(store), EncodeSettings())


def _rows(store: Path) -> dict[str, dict[str, Any]]:
    return {Path(r["uri"]).name: r for r in EncodingsStore(str(store)).read().to_pylist()}


def _counts(report: EncodeReport) -> tuple[int, int]:
    return report.encoded, report.reused


def _release(monkeypatch: pytest.MonkeyPatch, name: str, **changes: Any) -> None:
    """Install another release's version of one encoder in the registry, for this test only."""
    monkeypatch.setitem(ENCODERS, name, dataclasses.replace(ENCODERS[name], **changes))


def test_an_encoder_that_raises_records_encoder_failed_and_the_fixed_release_reencodes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    dataset(data, 3)
    write(data / "odd.jpg", natural(9, ODD_WIDTH, 90))
    dhash = ENCODERS["dhash"].fn
    assert dhash is not None

    def buggy(decoded: Any, given: Any) -> Any:
        if decoded.width == ODD_WIDTH:
            raise RuntimeError("simulated encoder bug")
        return dhash(decoded, given)

    with monkeypatch.context() as buggy_release:
        _release(buggy_release, "dhash", fn=buggy)
        first = _encode(data, store)
    assert (first.encoded, first.new_errors) == (3, 1)
    assert first.errors == {"encoder_failed": 1}
    odd = _rows(store)["odd.jpg"]
    assert odd["error"] == "encoder_failed"
    assert "encoder dhash raised RuntimeError: simulated encoder bug" in odd["error_message"]
    assert odd["phash"] is None
    assert odd["dhash"] is None
    assert odd["exact"] is not None

    fixed = _encode(data, store)  # the same, unchanged file under the fixed release
    assert _counts(fixed) == (1, 3)
    assert fixed.new_errors == 0
    assert not fixed.errors
    odd = _rows(store)["odd.jpg"]
    assert odd["error"] is None
    assert odd["error_message"] is None
    assert odd["dhash"] is not None
    assert _encode(data, store).decoded == 0


def test_bad_files_keep_their_own_kind_and_are_not_retried(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    write(data / "ok.jpg", natural(1, 64, 64))
    (data / "cut.jpg").write_bytes(encode(natural(2, 400, 300), "JPEG")[:2000])
    broken = bytearray(encode(natural(4, 400, 300), "PNG"))
    idat = broken.index(b"IDAT")
    broken[idat + 20 : idat + 400] = b"\xff" * 380  # garbage inside the compressed stream
    (data / "broken.png").write_bytes(bytes(broken))
    _encode(data, store)
    rows = _rows(store)
    assert rows["cut.jpg"]["error"] == "truncated"
    assert rows["broken.png"]["error"] in ("corrupt", "truncated")
    again = _encode(data, store)
    assert (again.decoded, again.reused) == (0, 3)
    assert _rows(store) == rows


def test_an_exception_decoding_does_not_classify_is_encoder_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "a.jpg", natural(1, 64, 64))

    def buggy_decode(_data: bytes, **_kwargs: Any) -> Any:
        raise KeyError("simulated decoding bug")

    monkeypatch.setattr(encoding, "decode_image", buggy_decode)
    (ref,), _ = list_sources([DatasetSource("d", str(tmp_path))])
    (row,) = encode_refs([ref], EncodeSettings())[0].to_pylist()
    assert row["error"] == "encoder_failed"
    assert "decoding raised KeyError" in row["error_message"]
    assert row["exact"] is not None
    assert path.exists()


def test_a_network_that_raises_fails_its_batch_with_encoder_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch", reason="the cnn encoder needs pip install 'dupflow[cnn]'")
    dataset(tmp_path, 3)
    network = cnn.embedder(None)  # the instance encode_refs gets

    def buggy_embed(_batch: list[np.ndarray]) -> np.ndarray:
        raise RuntimeError("simulated network bug")

    monkeypatch.setattr(network, "embed", buggy_embed)
    refs, _ = list_sources([DatasetSource("d", str(tmp_path))])
    table, stats = encode_refs(refs, EncodeSettings(encoders=("phash", "cnn")))
    assert stats.errors == {"encoder_failed": 3}
    assert stats.encoded == 0
    for row in table.to_pylist():
        assert "encoder cnn raised RuntimeError: simulated network bug" in row["error_message"]
        assert row["phash"] is None
        assert row["cnn"] is None


def test_a_new_encoder_version_reencodes_every_row_and_an_equal_one_reuses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    dataset(data, 4)
    assert _counts(_encode(data, store)) == (4, 0)
    assert _counts(_encode(data, store)) == (0, 4)

    _release(monkeypatch, "dhash", version=2, fn=lambda _decoded, _given: 7)  # its values changed
    assert _counts(_encode(data, store)) == (4, 0)
    assert {r["dhash"] for r in _rows(store).values()} == {7}
    versions = EncodingsStore(str(store)).complete_record().dataset_versions("train")
    assert versions == {"phash": 1, "dhash": 2, "phash_dihedral": 1, "phash_windows": 1, "orb": 2}
    assert _counts(_encode(data, store)) == (0, 4)


def test_a_store_from_before_versions_were_recorded_holds_version_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    dataset(data, 3)
    for name in [n for n, e in ENCODERS.items() if e.version != 1]:
        _release(monkeypatch, name, version=1)  # a release whose encoders were all at version 1
    _encode(data, store)
    record = store / "_dupflow" / "store.json"
    body = json.loads(record.read_text())
    for info in body["datasets"].values():
        del info["encoder_versions"]
    record.write_text(json.dumps(body))
    assert _counts(_encode(data, store)) == (0, 3)
    _release(monkeypatch, "phash", version=2)
    assert _counts(_encode(data, store)) == (3, 0)


def test_a_new_encoder_version_does_not_retry_bad_files_but_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    (data / "text.jpg").write_bytes(b"not an image at all")
    _encode(data, store)
    _release(monkeypatch, "phash", version=2)
    again = _encode(data, store)
    assert (again.decoded, again.reused) == (0, 1)  # no encoder ever ran on it: nothing to redo
    assert EncodingsStore(str(store)).complete_record().dataset_versions("train")["phash"] == 2  # so merges agree


@pytest.mark.parametrize(("version", "counts"), [(1, (0, 4)), (2, (4, 0))], ids=["same-version", "new-version"])
def test_shards_staged_by_a_killed_run_are_reused_only_under_the_same_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int, counts: tuple[int, int]
) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    dataset(data, 4)
    refs, _ = list_sources([DatasetSource("train", str(data))])
    plan = prepare_encode(str(store), EncodeSettings(), refs)
    for shard in plan.shards:  # staged, then the run dies before its commit
        encode_shard(str(store), shard, plan.settings)
    _release(monkeypatch, "phash", version=version)
    assert _counts(_encode(data, store)) == counts


def test_merge_refuses_a_dataset_made_by_two_versions_of_an_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset(tmp_path / "a", 2, seed=1)
    dataset(tmp_path / "b", 2, seed=2)
    _encode(tmp_path / "a", tmp_path / "old")
    with monkeypatch.context() as newer_release:
        _release(newer_release, "dhash", version=2)
        _encode(tmp_path / "b", tmp_path / "new")
        _encode(tmp_path / "b", tmp_path / "new-val", name="val")
    out = tmp_path / "out"
    with pytest.raises(StoreError, match="dhash values are from encoder version 1") as refused:
        merge_stores([str(tmp_path / "old"), str(tmp_path / "new")], str(out))
    assert "dupflow encode" in str(refused.value)
    assert not out.exists()

    merge_stores([str(tmp_path / "old"), str(tmp_path / "new-val")], str(out))  # other datasets: fine
    rec = EncodingsStore(str(out)).complete_record()
    assert rec.dataset_versions("train")["dhash"] == 1
    assert rec.dataset_versions("val")["dhash"] == 2
