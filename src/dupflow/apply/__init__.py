"""Apply a move manifest safely: plan, dry run, journaled moves that resume after a crash, undo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dupflow.lazy import lazy_exports

if TYPE_CHECKING:
    from dupflow.apply.plan import Plan, plan_apply
    from dupflow.apply.runner import ApplyReport, apply_manifest, undo_journal
    from dupflow.apply.settings import ApplyOptions

__all__ = ["ApplyOptions", "ApplyReport", "Plan", "apply_manifest", "plan_apply", "undo_journal"]

# Where each export lives, imported on first use (PEP 562): the settings then import without the
# planner's and the runner's imports (numpy, pyarrow, fsspec).
_HOMES = {"ApplyOptions": "dupflow.apply.settings", "ApplyReport": "dupflow.apply.runner", "Plan": "dupflow.apply.plan",
          "apply_manifest": "dupflow.apply.runner", "plan_apply": "dupflow.apply.plan",
          "undo_journal": "dupflow.apply.runner"}

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__ = lazy_exports(__name__, _HOMES)
