"""Worker processes that die with their parent: a pool initializer and a pool built with it.

A process pool's workers outlive a parent that is SIGKILLed (nothing runs in the parent to stop them):
they go on taking the work already queued to them and then wait forever. `watch_parent`, run as the
pool's initializer in each worker, ends the worker when its parent goes, two ways:

* Linux: prctl(PR_SET_PDEATHSIG, SIGKILL), so the kernel kills the worker the moment the parent exits.
  The signal fires when the parent *thread* that started the worker exits, so the thread that submits
  to the pool must outlive it (true of a pool used in one `with` block, without max_tasks_per_child).
* everywhere (macOS, and as a second line on Linux): a daemon thread that polls os.getppid() and calls
  os._exit once the worker has been re-parented, i.e. its parent is gone.

Both need the worker to be a direct child of the process that passes its pid: the "spawn" and "fork"
start methods, not "forkserver".
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

__all__ = ["ORPHAN_EXIT_CODE", "POLL_SECONDS", "lifeline_pool", "set_parent_death_signal", "watch_parent"]

POLL_SECONDS = 0.25  # how often the fallback thread looks at os.getppid()
ORPHAN_EXIT_CODE = 70  # the exit status of a worker that found its parent gone
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
P = ParamSpec("P")
T = TypeVar("T")


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send `sig` to this process when its parent exits; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own symbols hold libc's prctl
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_orphaned(parent_pid: int, interval: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(ORPHAN_EXIT_CODE)


def watch_parent(parent_pid: int, pdeathsig: bool = True, interval: float = POLL_SECONDS) -> None:
    """Pool initializer: end this worker when `parent_pid` (its parent, which started it) exits."""
    if pdeathsig:
        set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the death signal was set (or this is no child of it)
        os._exit(ORPHAN_EXIT_CODE)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid, interval), name="dupflow-lifeline",
                     daemon=True).start()


def lifeline_pool(max_workers: int, start_method: str = "spawn") -> ProcessPoolExecutor:
    """A process pool whose workers die with this process; submit to it from the thread that made it."""
    if start_method == "forkserver":
        raise ValueError("lifeline_pool: forkserver workers are not children of this process")
    ctx = multiprocessing.get_context(start_method)
    return _LifelinePool(max_workers=max_workers, mp_context=ctx, initializer=watch_parent, initargs=(os.getpid(),))


_MAIN_LOCK = threading.Lock()  # one thread at a time hides and restores __main__


class _LifelinePool(ProcessPoolExecutor):
    """A pool that starts its workers (on submit, as they are needed) without re-running the main module."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        with _MAIN_LOCK, _main_not_rerun():
            return super().submit(fn, *args, **kwargs)



@contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Spawned children skip re-running this process's main module: the `dupflow` script imports the
    whole CLI and Prefect, ~3 CPU-seconds per worker that encoding never uses. Work submitted to the
    pool must then be importable by name (it is: library functions)."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, object] = {k: main.__dict__.pop(k) for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__["__spec__"] = None  # spawn reads it before __file__
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)
