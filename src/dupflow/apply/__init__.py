"""Apply a move manifest safely: plan, dry run, journaled moves that resume after a crash, undo."""

from dupflow.apply.plan import ApplyOptions, Plan, plan_apply
from dupflow.apply.runner import ApplyReport, apply_manifest, undo_journal

__all__ = ["ApplyOptions", "ApplyReport", "Plan", "apply_manifest", "plan_apply", "undo_journal"]
