"""Crash injection for tests: `DUPFLOW_FAULTS=name=N` kills this process at the N-th pass of a named
point (`*=N`: of any point). Unset (always, outside tests), a point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["FAULTS_ENV", "fault_point"]

FAULTS_ENV = "DUPFLOW_FAULTS"

_lock = threading.Lock()
_hits: dict[str, int] = {}


def _targets() -> dict[str, int]:
    spec = os.environ.get(FAULTS_ENV, "")
    out = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = item.partition("=")
        out[name] = int(count or 1)
    return out


def fault_point(name: str) -> None:
    """Die here, as `kill -9` would, when the environment asks for it; otherwise do nothing."""
    if FAULTS_ENV not in os.environ:
        return
    targets = _targets()
    with _lock:
        for key in (name, "*"):
            if key in targets:
                _hits[key] = _hits.get(key, 0) + 1
                if _hits[key] == targets[key]:
                    os.kill(os.getpid(), signal.SIGKILL)
