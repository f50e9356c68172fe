"""How tasks retry: I/O tasks back off exponentially; a settings problem is never retried."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from dupflow.errors import ConfigError

__all__ = ["IO_RETRIES", "NOT_CACHED"]


def _retry_unless_config_error(task: Any, task_run: Any, state: Any) -> bool:
    """A wrong setting fails the same way every time: retry only other failures (storage, network)."""
    return not isinstance(state.result(raise_on_failure=False), ConfigError)


# Results are plain values passed between tasks; Prefect must not hash or persist them.
NOT_CACHED: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}

IO_RETRIES: dict[str, Any] = {
    **NOT_CACHED,
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),  # 5, 10, 20 s
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_unless_config_error,
}
