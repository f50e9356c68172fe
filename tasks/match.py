"""Matching tasks: pin the store commit, search one block of every rule, decide and write the outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task

from dupflow.index.blocks import Block
from dupflow.match.job import BlockResult, MatchJob, MatchReport, finish_match_blocks, match_rules_block, plan_match
from dupflow.match.settings import MatchSettings
from dupflow.tasks.policy import NOT_CACHED

__all__ = ["finish_match_task", "match_block_task", "plan_match_task"]


@task(name="plan-match", **NOT_CACHED)
def plan_match_task(store_url: str, out_url: str, settings: MatchSettings, storage_options: dict[str, Any]) -> MatchJob:
    """Check the settings against the store and pin the commit every block will read."""
    return plan_match(store_url, out_url, settings, storage_options)


@task(name="match-block", task_run_name="match block {block.k}/{block.of}", **NOT_CACHED)
def match_block_task(job: MatchJob, block: Block) -> BlockResult:
    """One block of every rule's search; the worker loads and indexes the store once per process."""
    return match_rules_block(job, block)


@task(name="decide-and-write", **NOT_CACHED)
def finish_match_task(job: MatchJob, blocks: Sequence[BlockResult]) -> MatchReport:
    """Groups, keepers, scores, manifest and summary from every block's pairs, written to the output."""
    return finish_match_blocks(job, blocks)
