"""The cnn encoder: packaged weights with no network, deterministic unit embeddings that rank
edited copies above unrelated pictures, other weights through the same interface, the store.

Without the [cnn] extra these skip, except the tests of what happens without it (nothing here imports
torch at module level: the tests that use it import it after the skip check)."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import needs_cnn_extra
from dupflow.encode import cnn, models
from dupflow.encode.encoding import encode_refs
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError, StoreError
from dupflow.io.listing import list_dataset
from dupflow.io.sources import DatasetSource
from dupflow.match.embeddings import embeddings_from_store
from dupflow.match.job import match_store
from dupflow.match.rules import DEFAULT_RULES_WITH_EMBEDDINGS
from dupflow.match.settings import MatchSettings
from dupflow.store.encode_job import run_encode
from dupflow.store.encodings import EncodingsStore
from imagegen import natural, write

RUN_WITHOUT_EXTRA = {"test_model_specs_are_checked_before_any_work", "test_missing_extra_says_how_to_install_it"}


@pytest.fixture(autouse=True)
def _cnn_extra(request: pytest.FixtureRequest) -> None:
    needs_cnn_extra(request, RUN_WITHOUT_EXTRA)


def _photo() -> Image.Image:
    from sklearn.datasets import load_sample_images

    return Image.fromarray(load_sample_images().images[0])  # china.jpg: a temple among trees


def _vectors(paths: dict[str, Path], tmp_path: Path, **settings: object) -> dict[str, np.ndarray]:
    refs = list(list_dataset(DatasetSource("d", str(tmp_path / "imgs"))))
    table, stats = encode_refs(refs, EncodeSettings(encoders=("cnn",), **settings))  # type: ignore[arg-type]
    assert stats.encoded == len(paths)
    held = embeddings_from_store(table).vectors
    assert held.dtype == np.float16  # the store's float16 values are held as float16 unit rows
    rows = held.astype(np.float32)  # compared here in float32, as the search computes
    by_uri = dict(zip(table["uri"].to_pylist(), rows, strict=True))
    return {name: by_uri[str(p)] for name, p in paths.items()}


def test_packaged_model_loads_with_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    network = cnn.Embedder(models.ModelSpec.parse(None), threads=1)
    out = network.embed([network.prepare(natural(1))])
    assert out.shape == (1, 1280)
    assert network.dim == 1280
    assert models.model_identity(network.spec).startswith("efficientnet-lite0:sha256=")


def test_embeddings_are_deterministic_unit_vectors_whatever_the_batch(tmp_path: Path) -> None:
    paths = {f"p{i}": write(tmp_path / "imgs" / f"p{i}.jpg", natural(i), quality=90) for i in range(5)}
    first = _vectors(paths, tmp_path)
    again = _vectors(paths, tmp_path)
    network = cnn.embedder(None)
    one_by_one = {name: network.embed([network.prepare(Image.open(p).convert("RGB"))])[0]
                  for name, p in paths.items()}
    for name in paths:
        assert np.array_equal(first[name], again[name])
        assert abs(float(np.linalg.norm(first[name])) - 1.0) < 1e-3  # unit rows, rounded to float16
        # batch of 5 (stored as float16, held as float16 unit rows) vs batch of 1 (float32): two float16
        # roundings apart at most
        assert np.allclose(first[name], one_by_one[name], rtol=2**-9, atol=2**-13)
        assert float(first[name] @ one_by_one[name]) > 1 - 5e-5
    sims = np.array([[first[a] @ first[b] for b in paths] for a in paths])
    assert (sims[~np.eye(len(paths), dtype=bool)] < 0.999).all()  # distinct pictures, distinct embeddings


def test_crops_and_rotations_are_closer_than_unrelated_pictures(tmp_path: Path) -> None:
    photo = _photo()
    w, h = photo.size
    edits = {
        "crop 15%": photo.crop((int(w * 0.1), int(h * 0.05), int(w * 0.95), int(h * 0.9))),
        "rotate 4deg": photo.rotate(4, resample=Image.Resampling.BICUBIC).crop((30, 25, w - 30, h - 25)),
        "rotate 90": photo.transpose(Image.Transpose.ROTATE_90),
        "flip": photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    }
    from sklearn.datasets import load_sample_images

    unrelated = {"flower": Image.fromarray(load_sample_images().images[1]), "generated": natural(7, 640, 427)}
    paths = {"photo": write(tmp_path / "imgs" / "photo.jpg", photo, quality=92)}
    for name, img in {**edits, **unrelated}.items():
        paths[name] = write(tmp_path / "imgs" / f"{name.replace(' ', '_')}.jpg", img, quality=92)
    v = _vectors(paths, tmp_path)
    closest_unrelated = max(float(v["photo"] @ v[name]) for name in unrelated)
    for name in edits:
        assert float(v["photo"] @ v[name]) > closest_unrelated + 0.05, name
    assert float(v["photo"] @ v["crop 15%"]) > 0.9


def test_other_weights_go_through_the_same_interface(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=4), torch.nn.ReLU(), torch.nn.Conv2d(16, 24, 3))
    model = tmp_path / "tiny.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(net.eval(), (torch.zeros(2, 3, 224, 224),), dynamic_shapes=({0: batch},)),
                      str(model))
    for i in range(3):
        write(tmp_path / "imgs" / f"p{i}.jpg", natural(i), quality=90)
    store = str(tmp_path / "store")
    sources = [DatasetSource("d", str(tmp_path / "imgs"))]
    spec = f"exported={model}"
    report = run_encode(sources, store, EncodeSettings(encoders=("phash", "cnn"), cnn_model=spec))
    assert report.encoded == 3
    table = EncodingsStore(store).read()
    assert table.schema.field("cnn").type.list_size == 24  # pooled N x 24 x H x W feature map
    rec = json.loads((tmp_path / "store" / "_dupflow" / "store.json").read_text())
    assert rec["settings"]["cnn_model"] == spec
    assert rec["settings"]["cnn_dim"] == 24
    # a later run without --cnn-model keeps the store's model; another model is refused
    again = run_encode(sources, store, EncodeSettings(encoders=("phash",)))
    assert again.reused == 3
    with pytest.raises(StoreError, match="cnn embeddings from"):
        run_encode(sources, store, EncodeSettings(encoders=("cnn",)))


def test_model_specs_are_checked_before_any_work() -> None:
    with pytest.raises(ConfigError, match="unknown cnn model"):
        EncodeSettings(encoders=("cnn",), cnn_model="resnet50")
    with pytest.raises(ConfigError, match="only efficientnet-lite0 ships weights"):
        EncodeSettings(encoders=("cnn",), cnn_model="efficientnet-lite2")


def test_a_missing_weights_file_is_named() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        cnn.embedder("exported=/nonexistent/model.pt2")


def test_missing_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec  # the function dupflow.encode.models looks the extras up with
    absent = {"torch", "onnxruntime"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name in absent else real(name))
    with pytest.raises(ConfigError, match=r"pip install 'dupflow\[cnn\]'"):
        EncodeSettings(encoders=("phash", "cnn"))
    with pytest.raises(ConfigError, match=r"ONNX Runtime, which is not installed: pip install 'dupflow\[onnx\]'"):
        EncodeSettings(encoders=("phash", "cnn"), cnn_model="onnx=/models/m.onnx,size=224")
    with pytest.raises(ConfigError, match=r"ONNX Runtime, which is not installed: .*declare size=N"):
        EncodeSettings(encoders=("phash", "cnn"), cnn_model="onnx=/models/m.onnx")


def test_adding_cnn_to_a_store_is_incremental_and_turns_on_the_combined_rule(tmp_path: Path) -> None:
    photo = _photo()
    root = tmp_path / "imgs"
    write(root / "photo.jpg", photo, quality=92)
    write(root / "photo_cropped.jpg", photo.crop((60, 40, 600, 400)), quality=92)  # a 25% crop: hashes miss it
    from sklearn.datasets import load_sample_images

    write(root / "flower.jpg", Image.fromarray(load_sample_images().images[1]), quality=90)
    write(root / "generated.jpg", natural(20, 640, 427), quality=90)
    store, sources = str(tmp_path / "store"), [DatasetSource("d", str(root))]
    run_encode(sources, store, EncodeSettings(encoders=("phash", "dhash")))
    hashes_only = match_store(store, str(tmp_path / "out1"), MatchSettings())
    assert hashes_only.summary["settings"]["rules"] == ["exact", "phash<=10"]
    assert hashes_only.summary["totals"]["pairs"] == 0
    added = run_encode(sources, store, EncodeSettings(encoders=("cnn",)))
    assert added.encoded == 4  # every file gains the new encoder
    assert run_encode(sources, store, EncodeSettings(encoders=("cnn",))).encoded == 0
    both = match_store(store, str(tmp_path / "out2"), MatchSettings())
    assert both.summary["settings"]["rules"] == list(DEFAULT_RULES_WITH_EMBEDDINGS)
    assert both.summary["settings"]["embeddings"]["images"] == 4
    pairs = pq.read_table(tmp_path / "out2" / "pairs.parquet").to_pylist()
    assert [(Path(p["a"]).name, Path(p["b"]).name) for p in pairs] == [("photo.jpg", "photo_cropped.jpg")]
    assert pairs[0]["rule"].startswith("cosine>=")
    assert pairs[0]["distance"] is None
    assert 1 - 20 / 64 <= pairs[0]["similarity"] <= 1.0  # the least over the rule's metrics
