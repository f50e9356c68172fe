"""Credentials for a run's storage, carried out of band: never a flow parameter, so never in Prefect's
database. `dupflow run -o key=... -o secret=...` hands them to the flow in this process; a deployment
names a Prefect Secret block (`storage_secret:`), read inside the flow run; the environment (AWS_*)
needs nothing here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from dupflow.config import DedupConfig, merged
from dupflow.errors import ConfigError

__all__ = ["run_storage_options", "storage_credentials"]

_GIVEN: list[dict[str, Any]] = []  # the credentials given to the runs of this process, innermost last


@contextmanager
def storage_credentials(options: dict[str, Any]) -> Iterator[None]:
    """Runs started inside this block use `options` (credentials) on top of their storage options."""
    _GIVEN.append(dict(options))
    try:
        yield
    finally:
        _GIVEN.pop()


def run_storage_options(config: DedupConfig) -> dict[str, Any]:
    """The storage options a run's tasks get: the config's, then its Secret block's, then the
    credentials handed over in this process."""
    options = dict(config.storage_options)
    if config.storage_secret:
        options = merged(options, _secret_block(config.storage_secret))
    return merged(options, _GIVEN[-1]) if _GIVEN else options


def _secret_block(name: str) -> dict[str, Any]:
    from prefect.blocks.system import Secret

    try:
        value = cast(Secret[Any], Secret.load(name)).get()
    except ValueError as exc:
        raise ConfigError(f"storage_secret {name!r}: no such Prefect Secret block: create it with "
                          f"`Secret(value={{'key': ..., 'secret': ...}}).save({name!r})`") from exc
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"storage_secret {name!r} must hold a JSON mapping of storage options") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"storage_secret {name!r} must hold a mapping of storage options, e.g. "
                          "{'key': ..., 'secret': ...}")
    return value
