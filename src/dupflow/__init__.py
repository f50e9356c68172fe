"""dupflow: exact and near-duplicate image detection for large datasets.

The Python API (`dupflow.api`): `encode_images`, `find_duplicates`, `open_duplicates`, `apply_moves`,
`undo_moves`, `write_report`, and the settings models they take. Names are imported when first used, so
`import dupflow` (and the `dupflow` command) starts in milliseconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dupflow.errors import ConfigError, DupflowError, ErrorKind, StorageError, StoreError
from dupflow.lazy import lazy_exports

if TYPE_CHECKING:
    from dupflow.api import (
        Duplicates,
        apply_moves,
        encode_images,
        find_duplicates,
        open_duplicates,
        undo_moves,
        write_report,
    )
    from dupflow.apply.settings import ApplyOptions
    from dupflow.encode.settings import EncodeSettings
    from dupflow.io.sources import DatasetSource
    from dupflow.match.settings import MatchSettings
    from dupflow.report.settings import ReportSettings

    __version__: str

# Each lazily imported name and the module that defines it.
_LAZY = {
    "Duplicates": "dupflow.api",
    "apply_moves": "dupflow.api",
    "encode_images": "dupflow.api",
    "find_duplicates": "dupflow.api",
    "open_duplicates": "dupflow.api",
    "undo_moves": "dupflow.api",
    "write_report": "dupflow.api",
    "ApplyOptions": "dupflow.apply.settings",
    "DatasetSource": "dupflow.io.sources",
    "EncodeSettings": "dupflow.encode.settings",
    "MatchSettings": "dupflow.match.settings",
    "ReportSettings": "dupflow.report.settings",
}

__all__ = [
    "ApplyOptions",
    "ConfigError",
    "DatasetSource",
    "DupflowError",
    "Duplicates",
    "EncodeSettings",
    "ErrorKind",
    "MatchSettings",
    "ReportSettings",
    "StorageError",
    "StoreError",
    "__version__",
    "apply_moves",
    "encode_images",
    "find_duplicates",
    "open_duplicates",
    "undo_moves",
    "write_report",
]


if not TYPE_CHECKING:  # type checkers see the imports above, so a misspelt name stays an error
    _exports = lazy_exports(__name__, _LAZY)

    def __getattr__(name: str) -> Any:
        """The public names above, imported on first use (PEP 562)."""
        if name == "__version__":  # package metadata: ~0.1 s to read, so only when asked
            globals()[name] = _installed_version()
            return globals()[name]
        return _exports(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _installed_version() -> str:
    """dupflow's version from its package metadata ("0.0.0" in a source tree without installation)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dupflow")
    except PackageNotFoundError:
        return "0.0.0"
