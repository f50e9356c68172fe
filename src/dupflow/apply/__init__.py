"""Apply a move manifest safely: plan, dry run, journaled moves that resume after a crash, undo."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dupflow.apply.plan import Plan, plan_apply
    from dupflow.apply.runner import ApplyReport, apply_manifest, undo_journal
    from dupflow.apply.settings import ApplyOptions

__all__ = ["ApplyOptions", "ApplyReport", "Plan", "apply_manifest", "plan_apply", "undo_journal"]

# Where each export lives, imported on first use (PEP 562): the settings then import without the
# planner's and the runner's imports (numpy, pyarrow, fsspec).
_HOMES = {"ApplyOptions": "settings", "ApplyReport": "runner", "Plan": "plan", "apply_manifest": "runner",
          "plan_apply": "plan", "undo_journal": "runner"}

if not TYPE_CHECKING:  # type checkers see the imports above

    def __getattr__(name: str) -> Any:
        """An export, imported from its module when first asked for."""
        if name not in _HOMES:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
        globals()[name] = value
        return value
