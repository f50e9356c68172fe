"""Networks on ONNX Runtime: the fast path for the `cnn` encoder, on CPU or a CUDA device.

The packaged EfficientNet-Lite networks are converted to ONNX once per machine, from the installed
weights (PyTorch does the conversion; nothing is downloaded), into the model cache:
`DUPFLOW_MODEL_CACHE`, else `~/.cache/dupflow/models`. A machine without PyTorch runs them from a cache
filled elsewhere (`dupflow model prepare` prints the file to copy). Any other ONNX image model is
loaded as the user gives it (`onnx=PATH`, see `dupflow.encode.models`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np
from filelock import FileLock

from dupflow.encode.models import CNN_HINT, Device, ModelSpec, weights_digest, weights_path
from dupflow.errors import ConfigError

__all__ = ["CACHE_ENV", "OnnxNet", "can_convert", "converted_model", "fixed_input_size", "require_conversion",
           "require_cuda"]

CACHE_ENV = "DUPFLOW_MODEL_CACHE"
# Bumped when the conversion changes the graph: cached files of another version are not used.
CONVERSION_VERSION = 2
_CUDA = "CUDAExecutionProvider"


def _cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "dupflow" / "models"


def cached_model_path(spec: ModelSpec) -> Path:
    """Where the converted ONNX file of a packaged-architecture spec lives in the model cache."""
    return _cache_dir() / f"{spec.name}-{weights_digest(spec)}-v{CONVERSION_VERSION}.onnx"


def can_convert(spec: ModelSpec) -> bool:
    """Whether `spec` can run on ONNX Runtime here: converted already, or PyTorch is here to convert it."""
    if cached_model_path(spec).is_file():
        return True
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "efficientnet_lite_pytorch", "onnx"))


def require_conversion(spec: ModelSpec) -> None:
    """Raise a ConfigError saying how to get the converted model when it cannot be had here."""
    if not can_convert(spec):
        raise ConfigError(
            f"{spec.text} on ONNX Runtime needs its one-time conversion, and this machine has neither the "
            f"converted file ({cached_model_path(spec)}) nor PyTorch to make it: run `dupflow model prepare` "
            f"where dupflow[cnn] is installed and copy the file it prints into {CACHE_ENV} here, or {CNN_HINT}")


def converted_model(spec: ModelSpec) -> Path:
    """The spec's network as an ONNX file in the model cache, converted now if it is not there yet
    (one process converts; the others wait for it)."""
    path = cached_model_path(spec)
    if path.is_file():
        return path
    require_conversion(spec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _convert(spec, path)
    except OSError as exc:
        raise ConfigError(f"cannot write the converted {spec.text} into the model cache {path.parent}: {exc}; set "
                          f"{CACHE_ENV} to a writable folder") from None
    return path


def _convert(spec: ModelSpec, path: Path) -> None:
    """Convert into `path` unless another process did it meanwhile (one converts, the others wait)."""
    with FileLock(f"{path}.lock"):
        if not path.is_file():
            from dupflow.encode.torch_net import export_onnx

            tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
            try:
                export_onnx(spec, str(tmp))
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)


def require_cuda() -> None:
    """Raise a ConfigError when this ONNX Runtime cannot run on a CUDA device."""
    import onnxruntime as ort

    if _CUDA not in ort.get_available_providers():
        raise ConfigError(
            "--device cuda: this machine's ONNX Runtime has no CUDA provider (it has "
            f"{', '.join(ort.get_available_providers())}): install onnxruntime-gpu where an NVIDIA GPU and its "
            "driver are, or use --device cpu")


def _session(path: str, threads: int, device: Device, optimise: bool = True) -> Any:
    """An inference session over the file, with `threads` intra-op threads (0: ONNX Runtime's default);
    `optimise` False skips graph optimisation, for a session that only reads the model's signature."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = threads
    # idle threads spinning between batches burn CPU the decoder of the same process needs
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        require_cuda()
        providers = [_CUDA, *providers]
        if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from the nvidia-* wheels, where installed
            ort.preload_dlls()
    try:
        session = ort.InferenceSession(path, options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types for bad or unreadable models
        raise ConfigError(f"cannot load ONNX model {path}: {type(exc).__name__}: {exc}") from None
    if device == "cuda" and session.get_providers()[0] != _CUDA:
        raise ConfigError("--device cuda: ONNX Runtime could not start its CUDA provider on this machine (no GPU "
                          "visible, or a CUDA/cuDNN library missing; its log says which); use --device cpu")
    return session


@functools.cache
def _input_shape(path: str, _size: int, _mtime_ns: int) -> tuple[Any, ...]:
    session = _session(path, 1, "cpu", optimise=False)
    return tuple(session.get_inputs()[0].shape)


def _layout(shape: tuple[Any, ...], path: str) -> tuple[Literal["nchw", "nhwc"], Any, Any]:
    """The input's layout and its (height, width), each an int or a symbolic name."""
    if len(shape) == 4 and shape[1] == 3:
        return "nchw", shape[2], shape[3]
    if len(shape) == 4 and shape[3] == 3:
        return "nhwc", shape[1], shape[2]
    raise ConfigError(f"{path} takes input of shape {list(shape)}: the cnn encoder feeds N x 3 x S x S "
                      "(or N x S x S x 3) pictures")


def fixed_input_size(path: str) -> int | None:
    """The square input size an ONNX model fixes, or None when it takes any size."""
    st = os.stat(path)
    _, height, width = _layout(_input_shape(path, st.st_size, st.st_mtime_ns), path)
    if isinstance(height, int) and isinstance(width, int):
        if height != width:
            raise ConfigError(f"{path} takes {height} x {width} pictures; the cnn encoder feeds square ones")
        return height
    return None


class OnnxNet:
    """A network on ONNX Runtime: uint8 N x S x S x 3 pictures in, its first output (N x D or
    N x D x H x W) out. Converted models take the pictures as they are (normalising inside the graph);
    other models get them normalised, as float32 or float16, in their layout."""

    def __init__(self, spec: ModelSpec, threads: int = 0, device: Device = "cpu") -> None:
        path = str(converted_model(spec)) if spec.convertible else weights_path(spec)
        self._spec = spec
        self._session = _session(path, threads, device)
        first = self._session.get_inputs()[0]
        self._input = first.name
        self._raw = first.type == "tensor(uint8)"
        self._layout = _layout(tuple(first.shape), path)[0]
        self.fixed_batch: int | None = first.shape[0] if isinstance(first.shape[0], int) else None
        self._output = spec.output or self._session.get_outputs()[0].name
        names = [o.name for o in self._session.get_outputs()]
        if self._output not in names:
            raise ConfigError(f"{path} has no output {self._output!r}; it has {', '.join(names)}")
        self._dtype = np.float16 if first.type == "tensor(float16)" else np.float32

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        size = self.fixed_batch
        if size is None or len(batch) == size:
            return self._run(batch)
        parts = []  # a model exported with a fixed batch: run it in chunks of that size, the last padded
        for i in range(0, len(batch), size):
            chunk = batch[i : i + size]
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            parts.append(self._run(padded)[: len(chunk)])
        return np.concatenate(parts)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = batch if self._raw else self._spec.normalise(batch).astype(self._dtype, copy=False)
        if self._layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        out = self._session.run([self._output], {self._input: np.ascontiguousarray(x)})[0]
        return np.asarray(out, dtype=np.float32)
