"""How files are turned into encodings: the encode stage's settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from dupflow.encode.catalog import ENCODER_NAMES, FEATURES_ENCODER, decode_size_for
from dupflow.encode.models import Device, ModelSpec, Runtime, resolve_runtime
from dupflow.errors import ConfigError
from dupflow.io.limits import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS
from dupflow.settings import Preset, StageSettings, presets_help, setting

__all__ = ["DEFAULT_ENCODERS", "PRESET_ENCODERS", "EncodeSettings", "decode_size_for", "settings_conflict"]

# What each preset encodes; `exact` (SHA-256 of the bytes) is always on. The 7 mirrored and rotated
# pHashes cost ~0.2 ms per image (one DCT gives all seven views); the 34 windows' pHashes (~2 ms) and the
# local features (orb) add ~12 ms of CPU per image to a hashes-only encode (11.4 s against 3.2 s for 1,336
# files on 2 workers), and find the crops, mirrored and rotated copies that pHash alone misses, verified
# (bench/results/accuracy.md: F1 0.975 against 0.820).
PRESET_ENCODERS: dict[str, tuple[str, ...]] = {
    "fast": ("phash", "dhash"),
    "default": ("phash", "dhash", "phash_dihedral", "phash_windows", FEATURES_ENCODER),
    "thorough": ("phash", "dhash", "phash_dihedral", "phash_windows", "cnn", FEATURES_ENCODER),
}
DEFAULT_ENCODERS = PRESET_ENCODERS["default"]


class EncodeSettings(StageSettings):
    """How files are turned into encodings. Settings that change hash values are fixed per store."""

    preset: Preset | None = setting(
        None, presets_help("what to encode") + " [default: default; --encoders overrides it]")
    encoders: tuple[str, ...] = setting(
        DEFAULT_ENCODERS, f"encoders, comma-separated, from {', '.join(ENCODER_NAMES)} or 'all'; exact (SHA-256 of the "
        "bytes) is always computed", short="-e", metavar="LIST", comma=True)
    hash_size: Literal[8, 16] = setting(8, "8 -> 64-bit hashes, 16 -> 256-bit hashes")
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "images declaring more pixels are recorded as decompression_bomb "
                              "errors", ge=1)
    max_file_bytes: int = setting(DEFAULT_MAX_FILE_BYTES, "files larger than this are recorded as too_large errors",
                                  ge=1)
    shard_size: int | None = setting(None, "files per encode task [default: auto]", ge=1)
    listing_tasks: int = setting(
        0, "how many share the listing of each folder or prefix dataset, each walking the sub-folders whose "
        "names hash to it (the first also takes the files at the top): Dask tasks in a flow, threads in "
        "`dupflow encode`; 0: one per worker thread (flow) or process (-j) for an object store, one for a "
        "local folder; a file list is read by one",
        ge=0)
    sniff_content: bool = setting(
        False, "also list files whose name has no image extension (none, or another) when their first 64 bytes "
        "are an image's; one small read per such file, none for the others")
    cnn_model: str | None = setting(
        None, "with --encoders ...,cnn: efficientnet-lite0 (default, weights packaged), "
        "efficientnet-lite0..4=WEIGHTS.pth, onnx=MODEL.onnx[,size=N][,norm=imagenet|clip|inception|lite|unit]"
        "[,output=NAME] (an ONNX image model) or exported=MODEL.pt2 (torch.export)", metavar="SPEC")
    cnn_runtime: Runtime = setting(
        "auto", "what runs the network: onnx (ONNX Runtime, ~3.5x faster on a CPU core), torch (eager PyTorch), "
        "or auto: onnx where it is installed")
    device: Device = setting(
        "cpu", "where the network runs: cpu, or cuda (an NVIDIA GPU; on a Dask cluster, the workers started "
        "with --resources GPU=1)")
    cnn_threads: int = setting(0, "network threads per encoding process; 0: the cores divided among the processes",
                               ge=0)
    storage_options: dict[str, Any] = setting(default_factory=dict, cli=False, repr=False)  # from the connection

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") and "encoders" not in data:
            preset = data["preset"]
            if preset in PRESET_ENCODERS:
                return {**data, "encoders": PRESET_ENCODERS[preset]}
        return data

    @field_validator("encoders", mode="before")
    @classmethod
    def _encoder_names(cls, value: Any) -> Any:
        names = [v.strip().lower() for v in value.split(",")] if isinstance(value, str) else value
        if not isinstance(names, list | tuple):
            return value
        names = [n for n in names if n and n != "exact"]  # SHA-256 of the bytes is always computed
        if names == ["all"]:
            return tuple(n for n in ENCODER_NAMES if n != "crop_resistant")
        unknown = [e for e in names if e not in ENCODER_NAMES]
        if unknown:
            raise ConfigError(f"unknown encoder(s) {', '.join(unknown)}; "
                              f"choose from {', '.join(sorted(ENCODER_NAMES))}")
        return tuple(names)

    @model_validator(mode="after")
    def _cnn(self) -> EncodeSettings:
        if "cnn" in self.encoders or self.cnn_model is not None:
            spec = ModelSpec.parse(self.cnn_model)
            if "cnn" in self.encoders:
                resolve_runtime(spec, self.cnn_runtime)
        if FEATURES_ENCODER in self.encoders:
            from dupflow.encode.features import require_cv2  # numpy: only for the orb encoder

            require_cv2()
        return self

    @property
    def uses_gpu(self) -> bool:
        """Whether encoding needs a GPU: the cnn encoder on --device cuda."""
        return "cnn" in self.encoders and self.device == "cuda"

    @property
    def decode_size(self) -> int:
        """Smallest side the reduced-scale decode keeps; fixed by hash_size so stores stay comparable."""
        return decode_size_for(self.hash_size)

    def value_settings(self) -> dict[str, Any]:
        """The settings that change encoded values: a store refuses rows made with others. With the cnn
        encoder they name the model (weights digest included) and its embedding size."""
        values: dict[str, Any] = {"hash_size": self.hash_size, "decode_size": self.decode_size}
        if "cnn" in self.encoders:
            from dupflow.encode.cnn import describe

            values.update(describe(ModelSpec.parse(self.cnn_model), self.cnn_runtime))
        return values


# Settings two encodings must share to live in one store (cnn_* only where both have embeddings).
_SHARED_VALUES = ("hash_size", "decode_size")


def settings_conflict(have: dict[str, Any], want: dict[str, Any]) -> str | None:
    """Why encodings made with `want` cannot join encodings made with `have`, or None."""
    for key in _SHARED_VALUES:
        if key in have and key in want and have[key] != want[key]:
            return f"{key} {have[key]} vs {want[key]}: use another store or the same --hash-size"
    if "cnn_id" in have and "cnn_id" in want and have["cnn_id"] != want["cnn_id"]:
        return (f"cnn embeddings from {have.get('cnn_model')} ({have['cnn_id']}) vs {want.get('cnn_model')} "
                f"({want['cnn_id']}): use another store, or --cnn-model {have.get('cnn_model')}")
    return None
