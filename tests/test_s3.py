"""The same encode over a real S3 HTTP endpoint (moto server on 127.0.0.1), store on S3 too."""

from __future__ import annotations

import boto3
import pytest

from dupflow.encode.settings import EncodeSettings
from dupflow.errors import StorageError
from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import run_encode
from dupflow.store.encodings import EncodingsStore
from imagegen import encode, natural

pytestmark = pytest.mark.s3


def _put(bucket: str, key: str, data: bytes) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)


def test_encode_over_s3_with_etag_incrementality(bucket: str) -> None:
    for i in range(6):
        _put(bucket, f"imgs/sub/{i}.jpg", encode(natural(i, 200, 150), "JPEG"))
    _put(bucket, "imgs/broken.jpg", b"not a jpeg")
    _put(bucket, "imgs/readme.txt", b"skip me")
    sources = [DatasetSource("train", f"s3://{bucket}/imgs")]
    store = f"s3://{bucket}/store"

    first = run_encode(sources, store, EncodeSettings(shard_size=2), workers=2)
    assert (first.listed, first.encoded, first.errors["not_an_image"]) == (7, 6, 1)
    rows = {r["uri"]: r for r in EncodingsStore(store).read().to_pylist()}
    assert f"s3://{bucket}/imgs/sub/3.jpg" in rows
    assert rows[f"s3://{bucket}/imgs/sub/3.jpg"]["etag"]

    assert run_encode(sources, store, EncodeSettings()).decoded == 0
    # Same key, same size class, new content: only the ETag says it changed.
    _put(bucket, "imgs/sub/3.jpg", encode(natural(99, 200, 150), "JPEG"))
    third = run_encode(sources, store, EncodeSettings())
    assert (third.decoded, third.reused) == (1, 6)
    new = {r["uri"]: r for r in EncodingsStore(store).read().to_pylist()}
    assert new[f"s3://{bucket}/imgs/sub/3.jpg"]["phash"] != rows[f"s3://{bucket}/imgs/sub/3.jpg"]["phash"]


def test_local_images_into_an_s3_store_and_back(bucket: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from imagegen import dataset

    dataset(tmp_path / "d", 3)
    run_encode([DatasetSource("local", str(tmp_path / "d"))], f"s3://{bucket}/st", EncodeSettings())
    assert EncodingsStore(f"s3://{bucket}/st").read().num_rows == 3


def test_missing_credentials_is_a_clear_error(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match="credentials"):
        run_encode([DatasetSource("x", f"s3://{bucket}/imgs")], f"s3://{bucket}/st",
                   EncodeSettings(storage_options={"skip_instance_cache": True}))


def test_match_an_s3_store_into_an_s3_prefix(bucket: str) -> None:
    import pyarrow.parquet as pq
    import s3fs

    from dupflow.match.job import OUTPUT_FILES, match_store
    from dupflow.match.settings import MatchSettings
    from dupflow.match.state import STATE_FOLDER

    picture = encode(natural(1, 200, 150), "JPEG", quality=90)
    _put(bucket, "corpus/a.jpg", picture)
    _put(bucket, "corpus/b.jpg", encode(natural(2, 200, 150), "JPEG", quality=90))
    _put(bucket, "ingest/a_again.jpg", picture)
    _put(bucket, "ingest/new.jpg", encode(natural(3, 200, 150), "JPEG", quality=90))
    sources = [DatasetSource("corpus", f"s3://{bucket}/corpus"), DatasetSource("ingest", f"s3://{bucket}/ingest")]
    run_encode(sources, f"s3://{bucket}/store", EncodeSettings())
    report = match_store(f"s3://{bucket}/store", f"s3://{bucket}/out", MatchSettings(reference=("corpus",)))
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/out")) == sorted([*OUTPUT_FILES, STATE_FOLDER])
    manifest = pq.read_table(f"{bucket}/out/manifest.parquet", filesystem=fs).to_pylist()
    assert [(m["source"], m["destination"], m["keeper"]) for m in manifest] == [
        (f"s3://{bucket}/ingest/a_again.jpg", f"s3://{bucket}/out/duplicates/ingest/a_again.jpg",
         f"s3://{bucket}/corpus/a.jpg")]
    assert report.summary["intersections"]["corpus & ingest"]["shared_groups"] == 1
