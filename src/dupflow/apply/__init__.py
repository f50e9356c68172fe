"""Apply a move manifest safely: plan, dry run, journaled moves that resume after a crash, undo."""

from dupflow.apply.plan import Plan, plan_apply
from dupflow.apply.runner import ApplyReport, apply_manifest, undo_journal
from dupflow.apply.settings import ApplyOptions

__all__ = ["ApplyOptions", "ApplyReport", "Plan", "apply_manifest", "plan_apply", "undo_journal"]
