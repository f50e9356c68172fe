"""Prefect tasks: each a thin wrapper over one core `dupflow` function.

Tasks carry URIs, shard descriptions and small settings objects, never decoded images. Only I/O
tasks (listing, encoding a shard) retry; a task that fails because of the settings does not.
"""

from dupflow.tasks.apply import apply_manifest_task
from dupflow.tasks.encode import (
    commit_encode_task,
    encode_shard_task,
    list_source_task,
    open_encode_task,
    prepare_encode_task,
)
from dupflow.tasks.match import finish_match_task, match_block_task, plan_match_task
from dupflow.tasks.report import publish_summary_task, write_report_task

__all__ = [
    "apply_manifest_task",
    "commit_encode_task",
    "encode_shard_task",
    "finish_match_task",
    "list_source_task",
    "match_block_task",
    "open_encode_task",
    "plan_match_task",
    "prepare_encode_task",
    "publish_summary_task",
    "write_report_task",
]
