"""The cnn encoder on ONNX Runtime: the values of eager PyTorch, any ONNX model end to end, one model
per store, the conversion cache, a run without PyTorch, and GPUs asked for where there are none.

Without the [cnn] extra these skip, except the spec checks (nothing here imports torch or onnxruntime at
module level)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import DASK, needs_cnn_extra, run_cli, start_scheduler, stop, wait_for_workers
from dupflow.encode import cnn, onnx_net
from dupflow.encode.models import ModelSpec, model_identity
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError, StoreError
from dupflow.io.lifeline import lifeline_pool
from dupflow.io.sources import DatasetSource
from dupflow.match.job import match_store
from dupflow.match.settings import MatchSettings
from dupflow.store.encode_job import run_encode
from dupflow.store.encodings import EncodingsStore
from imagegen import detailed, natural, write

WITHOUT_EXTRA = {"test_onnx_specs_are_checked_before_any_work", "test_spawned_workers_do_not_rerun_the_main_script"}


@pytest.fixture(autouse=True)
def _cnn_extra(request: pytest.FixtureRequest) -> None:
    needs_cnn_extra(request, WITHOUT_EXTRA)


def _tiny_onnx(path: Path, seed: int, size: int | None = 64, channels_last: bool = False,
               fixed_batch: int | None = None) -> Path:
    """A small random convolutional network exported to ONNX, batch dynamic (or `fixed_batch`). With a
    fixed `size` it returns N x 1024 (a random projection of 8 x 8 patches: near copies alike, other
    pictures not); with `size` None it takes any size and returns an N x 32 x H x W map."""
    import torch

    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = (
        [torch.nn.Conv2d(3, 16, 8, stride=8), torch.nn.Flatten()] if size else
        [torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, stride=2)])

    class ChannelsLast(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 3, 1, 2)

    net = torch.nn.Sequential(*([ChannelsLast()] if channels_last else []), *layers).eval()
    side, n = size or 48, fixed_batch or 2
    example = torch.zeros(n, side, side, 3) if channels_last else torch.zeros(n, 3, side, side)
    axes = {0: "n"} if size else ({0: "n", 1: "h", 2: "w"} if channels_last else {0: "n", 2: "h", 3: "w"})
    if fixed_batch:
        axes = {k: v for k, v in axes.items() if k != 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes
        torch.onnx.export(net, (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": axes, **({} if fixed_batch else {"y": {0: "n"}})})
    return path


def test_onnx_runtime_gives_the_values_of_eager_pytorch() -> None:
    spec = ModelSpec.parse(None)
    fast, eager = cnn.Embedder(spec, 1, "onnx"), cnn.Embedder(spec, 1, "torch")
    assert (fast.runtime, eager.runtime) == ("onnx", "torch")
    assert cnn.Embedder(spec, 1, "auto").runtime == "onnx"  # the fast path wherever ONNX Runtime is installed
    pictures = [natural(i) for i in range(6)] + [detailed(i) for i in range(6)]
    inputs = [fast.prepare(p.convert("RGB")) for p in pictures]
    a, b = fast.embed(inputs), eager.embed(inputs)
    assert a.shape == b.shape == (12, 1280)
    assert float((a * b).sum(axis=1).min()) > 1 - 1e-5  # each picture against itself
    assert float(np.abs(a @ a.T - b @ b.T).max()) < 1e-5  # every pair's cosine
    assert float(np.abs(a @ a.T - np.eye(12)).max()) > 0.01  # distinct pictures are not all alike


def test_the_conversion_is_made_once_per_cache_and_reused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = run_cli("model", "prepare", env={onnx_net.CACHE_ENV: str(cache)})
    (model,) = cache.glob("*.onnx")
    assert str(model) in first.stdout
    assert model_identity(ModelSpec.parse(None)) in first.stdout
    made = model.stat().st_mtime_ns
    second = run_cli("model", "prepare", env={onnx_net.CACHE_ENV: str(cache)})
    assert str(model) in second.stdout
    assert model.stat().st_mtime_ns == made
    assert not list(cache.glob(".tmp-*"))
    refused = run_cli("model", "prepare", "--cnn-model", f"onnx={model}", check=False)
    assert refused.returncode == 1
    assert "needs no preparing" in refused.stderr


# A child interpreter with PyTorch made unimportable, as on a machine with only dupflow[onnx].
_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None
from dupflow.encode.encoding import encode_refs
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError
from dupflow.io.listing import list_dataset
from dupflow.io.sources import DatasetSource
try:
    refs = list(list_dataset(DatasetSource("d", sys.argv[1])))
    table, stats = encode_refs(refs, EncodeSettings(encoders=("phash", "cnn")))
    print(json.dumps({"encoded": stats.encoded, "torch": sys.modules.get("torch") is not None}))
except ConfigError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_the_fast_path_runs_without_pytorch_from_a_prepared_cache(tmp_path: Path) -> None:
    for i in range(3):
        write(tmp_path / "imgs" / f"p{i}.jpg", natural(i), quality=90)
    onnx_net.converted_model(ModelSpec.parse(None))  # this session's cache holds the converted model

    def child(cache: str) -> dict[str, object]:
        proc = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, str(tmp_path / "imgs")], capture_output=True,
                              text=True, env={**os.environ, onnx_net.CACHE_ENV: cache}, timeout=300, check=True)
        got: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
        return got

    assert child(os.environ[onnx_net.CACHE_ENV]) == {"encoded": 3, "torch": False}
    empty = child(str(tmp_path / "empty-cache"))
    assert "needs its one-time conversion" in str(empty["error"])
    assert "dupflow model prepare" in str(empty["error"])


def _folder(root: Path) -> dict[str, Path]:
    """Three distinct pictures and a re-encoded, slightly resized copy of the first."""
    paths = {f"p{i}": write(root / f"p{i}.jpg", detailed(i, 320, 240), quality=92) for i in range(3)}
    paths["copy"] = write(root / "p0_copy.jpg", detailed(0, 320, 240).resize((300, 225)), quality=75)
    return paths


def test_any_onnx_model_encodes_and_matches_end_to_end(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "tiny.onnx", seed=0)  # takes 64 x 64 pictures: read from the model
    paths = _folder(tmp_path / "imgs")
    store, sources = str(tmp_path / "store"), [DatasetSource("d", str(tmp_path / "imgs"))]
    spec = f"onnx={model}"  # ImageNet's normalisation unless told
    report = run_encode(sources, store, EncodeSettings(encoders=("phash", "cnn"), cnn_model=spec), workers=2)
    assert report.encoded == 4
    rec = json.loads((tmp_path / "store" / "_dupflow" / "store.json").read_text())["settings"]
    assert rec["cnn_model"] == spec
    assert rec["cnn_dim"] == 1024
    assert rec["cnn_id"].startswith("onnx:sha256=")
    assert ":size=64:mean=123.675/116.28/103.53:std=58.395/57.12/57.375:" in rec["cnn_id"]
    assert EncodingsStore(store).read().schema.field("cnn").type.value_type.bit_width == 16  # float16 on disk
    out = tmp_path / "out"
    match_store(store, str(out), MatchSettings(rules=("cosine>=0.995",), verify_groups=False))
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert [(Path(p["a"]).name, Path(p["b"]).name) for p in pairs] == [(paths["p0"].name, paths["copy"].name)]


def test_a_channels_last_model_of_any_size_takes_the_declared_size(tmp_path: Path) -> None:
    model = _tiny_onnx(tmp_path / "any.onnx", seed=1, size=None, channels_last=True)
    with pytest.raises(ConfigError, match=r"takes pictures of any size: declare .*size=224"):
        ModelSpec.parse(f"onnx={model}")
    spec = ModelSpec.parse(f"onnx={model},size=40,mean=0.5/0.5/0.5,std=0.25/0.25/0.25")
    assert (spec.input_size, spec.mean, spec.std) == (40, (127.5,) * 3, (63.75,) * 3)
    network = cnn.Embedder(spec, 1)
    out = network.embed([network.prepare(natural(i)) for i in range(3)])
    assert out.shape == (3, 32)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_a_store_refuses_embeddings_from_another_model_but_not_from_another_runtime(tmp_path: Path) -> None:
    _folder(tmp_path / "imgs")
    store, sources = str(tmp_path / "store"), [DatasetSource("d", str(tmp_path / "imgs"))]
    first = f"onnx={_tiny_onnx(tmp_path / 'a.onnx', 0)}"
    run_encode(sources, store, EncodeSettings(encoders=("cnn",), cnn_model=first))
    other = f"onnx={_tiny_onnx(tmp_path / 'b.onnx', 1)}"  # the same network, other weights
    with pytest.raises(StoreError, match="cnn embeddings from"):
        run_encode(sources, store, EncodeSettings(encoders=("cnn",), cnn_model=other))

    packaged = str(tmp_path / "packaged")
    run_encode(sources, packaged, EncodeSettings(encoders=("cnn",), cnn_runtime="torch"))
    write(tmp_path / "imgs" / "new.jpg", natural(9), quality=90)
    added = run_encode(sources, packaged, EncodeSettings(encoders=("cnn",), cnn_runtime="onnx"))
    assert (added.encoded, added.reused) == (1, 4)  # one model, whichever runtime ran it


def test_onnx_specs_are_checked_before_any_work(tmp_path: Path) -> None:
    for text, message in (
        ("onnx=", "names no .onnx file"),
        ("onnx=/m.onnx,size=big", "size must be a whole number"),
        ("onnx=/m.onnx,size=224,norm=sepia", "unknown norm 'sepia'"),
        ("onnx=/m.onnx,size=224,mean=0.5/0.5/0.5", "mean=R/G/B and std=R/G/B together"),
        ("onnx=/m.onnx,size=224,mean=0.5/0.5,std=1/1/1", "is not three numbers"),
        ("onnx=/m.onnx,size=224,crop=center", "unknown option 'crop=center'"),
        (f"onnx={tmp_path / 'absent.onnx'}", "does not exist on this machine"),
    ):
        with pytest.raises(ConfigError, match=message):
            ModelSpec.parse(text)
    assert ModelSpec.parse("onnx=/m.onnx,size=224,norm=clip").mean == (122.771, 116.746, 104.094)


def test_device_cuda_without_a_gpu_fails_before_any_work(tmp_path: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine's ONNX Runtime has a CUDA provider")
    write(tmp_path / "imgs" / "p.jpg", natural(1), quality=90)
    store = tmp_path / "store"
    proc = run_cli("encode", "--dataset", f"d={tmp_path / 'imgs'}", "-s", str(store), "-e", "phash,cnn",
                   "--device", "cuda", check=False)
    assert proc.returncode == 1
    assert "--device cuda: this machine's ONNX Runtime has no CUDA provider" in proc.stderr
    assert "use --device cpu" in proc.stderr
    assert not store.exists()
    with pytest.raises(ConfigError, match="PyTorch sees no CUDA device"):
        cnn.check_device(EncodeSettings(encoders=("cnn",), cnn_runtime="torch", device="cuda"))


def _main_script_of_worker() -> str | None:
    """The script a spawned worker re-ran as its main module, if any."""
    return getattr(sys.modules.get("__mp_main__"), "__file__", None)


def test_spawned_workers_do_not_rerun_the_main_script() -> None:
    main = sys.modules["__main__"]
    script, spec = getattr(main, "__file__", None), getattr(main, "__spec__", None)
    assert script  # pytest's script, which a plain spawn pool re-runs in every worker
    with lifeline_pool(2) as pool:
        assert [f.result() for f in [pool.submit(_main_script_of_worker) for _ in range(4)]] == [None] * 4
    assert (main.__file__, main.__spec__) == (script, spec)  # restored


@pytest.fixture
def cpu_and_gpu_workers(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A scheduler, one worker advertising a GPU resource and one not; yields (address, gpu worker name)."""
    logs = (tmp_path / "dask.log").open("w")
    address, scheduler = start_scheduler(logs)
    common = ["--host", "127.0.0.1", "--nthreads", "1", "--memory-limit", "2GiB", "--no-nanny"]
    gpu = subprocess.Popen([DASK, "worker", address, *common, "--name", "gpu-0", "--resources", "GPU=1"],
                           stdout=logs, stderr=logs)
    cpu = subprocess.Popen([DASK, "worker", address, *common, "--name", "cpu-0"], stdout=logs, stderr=logs)
    try:
        wait_for_workers(address, 2)
        yield address, "gpu-0"
    finally:
        stop(gpu, cpu, scheduler)
        logs.close()


@pytest.mark.usefixtures("prefect_harness")
def test_gpu_work_runs_only_on_workers_that_have_a_gpu(cpu_and_gpu_workers: tuple[str, str]) -> None:
    from prefect import flow, task
    from prefect_dask.task_runners import DaskTaskRunner

    from dupflow.flows.runtime import on_gpu_workers

    address, gpu_worker = cpu_and_gpu_workers

    @task
    def where(_i: int) -> str:
        import time

        from distributed import get_worker

        time.sleep(0.3)  # long enough that the scheduler spreads the tasks over every worker it may use
        return str(get_worker().name)

    @flow(task_runner=DaskTaskRunner(address=address))  # type: ignore[arg-type]
    def spread(gpu: bool) -> set[str]:
        with on_gpu_workers(gpu):
            futures = where.map(list(range(8)))
        return {f.result() for f in futures}

    assert spread(True) == {gpu_worker}
    assert spread(False) == {gpu_worker, "cpu-0"}  # without it, both take work


@pytest.mark.usefixtures("prefect_harness")
def test_cuda_on_a_cluster_without_gpu_workers_fails_with_what_to_start(tmp_path: Path, dask_processes: str) -> None:
    from dupflow.config import validate_config
    from dupflow.flows.dedup import dedup

    write(tmp_path / "imgs" / "p.jpg", natural(1), quality=90)
    config = validate_config({"datasets": [{"name": "d", "url": str(tmp_path / "imgs")}],
                              "store": str(tmp_path / "store"), "out": str(tmp_path / "out"),
                              "cluster": {"address": dask_processes},
                              "encode": {"encoders": ["phash", "cnn"], "device": "cuda"}})
    with pytest.raises(ConfigError, match=r"none of the Dask cluster's 2 worker\(s\) advertises a GPU resource"):
        dedup(config)
    assert not (tmp_path / "out").exists()


def test_the_store_keeps_float16_within_a_float16_step_of_the_network(tmp_path: Path) -> None:
    paths = {f"p{i}": write(tmp_path / "imgs" / f"p{i}.png", natural(i)) for i in range(4)}
    store = str(tmp_path / "store")
    run_encode([DatasetSource("d", str(tmp_path / "imgs"))], store, EncodeSettings(encoders=("cnn",)))
    table = EncodingsStore(store).read(["uri", "cnn"])
    network = cnn.embedder(None)
    for uri, stored in zip(table["uri"].to_pylist(), table["cnn"].to_numpy(zero_copy_only=False), strict=True):
        (name,) = [n for n, p in paths.items() if str(p) == uri]
        exact = network.embed([network.prepare(Image.open(paths[name]).convert("RGB"))])[0]
        assert stored.dtype == np.float16
        assert float(np.abs(stored.astype(np.float32) - exact).max()) <= 2**-11


def test_run_with_cuda_and_no_gpu_fails_before_prefect_starts(tmp_path: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine's ONNX Runtime has a CUDA provider")
    write(tmp_path / "imgs" / "p.jpg", natural(1), quality=90)
    home = tmp_path / "prefect-home"
    proc = run_cli("run", "-d", f"d={tmp_path / 'imgs'}", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                   "-e", "phash,cnn", "--device", "cuda", check=False, env={"PREFECT_HOME": str(home)})
    assert proc.returncode == 1
    assert "--device cuda: this machine's ONNX Runtime has no CUDA provider" in proc.stderr
    assert "Starting temporary server" not in proc.stdout + proc.stderr
    assert not (tmp_path / "s").exists()
    assert not list(home.rglob("*.db"))


def test_a_model_with_a_fixed_batch_runs_in_chunks_of_it(tmp_path: Path) -> None:
    fixed = cnn.Embedder(ModelSpec.parse(f"onnx={_tiny_onnx(tmp_path / 'b2.onnx', 3, fixed_batch=2)}"), 1)
    dynamic = cnn.Embedder(ModelSpec.parse(f"onnx={_tiny_onnx(tmp_path / 'bn.onnx', 3)}"), 1)  # same weights
    assert fixed.batch == 2
    inputs = [fixed.prepare(natural(i)) for i in range(5)]
    assert np.allclose(fixed.embed(inputs), dynamic.embed(inputs), atol=1e-6)


def _two_outputs(path: Path) -> Path:
    """A network returning a feature map (first) and a flat N x 1024 vector (`vec`)."""
    import torch

    torch.manual_seed(5)

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 8, stride=8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            fmap = self.conv(x)
            return fmap, fmap.flatten(1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Two().eval(), (torch.zeros(2, 3, 64, 64),), str(path), dynamo=False, input_names=["x"],
                          output_names=["map", "vec"], dynamic_axes={"x": {0: "n"}, "map": {0: "n"}, "vec": {0: "n"}})
    return path


def test_the_output_to_embed_from_is_chosen_by_name(tmp_path: Path) -> None:
    model = _two_outputs(tmp_path / "two.onnx")
    first, named = ModelSpec.parse(f"onnx={model}"), ModelSpec.parse(f"onnx={model},output=vec")
    assert cnn.Embedder(first, 1).dim == 16  # the pooled map
    assert cnn.Embedder(named, 1).dim == 1024
    assert model_identity(named).endswith(":output=vec:pre1")
    assert model_identity(first) != model_identity(named)
    with pytest.raises(ConfigError, match=r"has no output 'logits'; it has map, vec"):
        cnn.Embedder(ModelSpec.parse(f"onnx={model},output=logits"), 1)


def test_a_replaced_model_file_is_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _tiny_onnx(path, seed=0)
    picture = natural(2)
    before = cnn.embedder(f"onnx={path}")
    first = before.embed([before.prepare(picture)])
    _tiny_onnx(tmp_path / "other.onnx", seed=1).replace(path)  # new weights, same path and size
    after = cnn.embedder(f"onnx={path}")
    assert after is not before
    assert float((first * after.embed([after.prepare(picture)])).sum()) < 0.99


def test_an_unwritable_model_cache_names_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(onnx_net.CACHE_ENV, str(blocker / "models"))
    with pytest.raises(ConfigError, match=r"cannot write the converted efficientnet-lite0 .* set DUPFLOW_MODEL_CACHE"):
        onnx_net.converted_model(ModelSpec.parse(None))


def test_a_float32_store_column_is_kept_as_float16() -> None:
    import pyarrow as pa

    from dupflow.encode.hashing import encodings_schema
    from dupflow.store.encodings import conform_table

    values = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    old = pa.table({"cnn": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 4)})
    schema = encodings_schema(["cnn"], {"hash_size": 8, "cnn_model": "m", "cnn_id": "i", "cnn_dim": 4})
    new = conform_table(old, pa.schema([schema.field("cnn")]))
    assert new.schema.field("cnn").type.value_type == pa.float16()
    stored = np.stack(new["cnn"].to_numpy(zero_copy_only=False)).astype(np.float32)
    assert np.allclose(stored, values, rtol=2**-10)
