"""How tasks retry: I/O tasks back off exponentially; a settings problem is never retried."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from dupflow.errors import ConfigError, StorageError

__all__ = ["IO_RETRIES", "NOT_CACHED"]


def _retry_unless_config_error(_task: Any, _task_run: Any, state: Any) -> bool:
    """A wrong setting, missing credentials or a missing bucket fail the same way every time: retry only
    what can heal (network faults, other storage errors)."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, ConfigError) or (isinstance(error, StorageError) and not error.transient))


# Results are plain values passed between tasks; Prefect must not hash or persist them.
NOT_CACHED: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}

IO_RETRIES: dict[str, Any] = {
    **NOT_CACHED,
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),  # 5, 10, 20 s
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_unless_config_error,
}
