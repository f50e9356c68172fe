"""dupflow: exact and near-duplicate image detection for large datasets."""

from importlib.metadata import PackageNotFoundError, version

from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError, DupflowError, ErrorKind, StorageError, StoreError
from dupflow.io.sources import DatasetSource

try:
    __version__ = version("dupflow")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "ConfigError",
    "DatasetSource",
    "DupflowError",
    "EncodeSettings",
    "ErrorKind",
    "StorageError",
    "StoreError",
    "__version__",
]
