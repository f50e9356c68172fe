"""Prefect's embedded API server for a local `dupflow run`, started before Prefect is even imported.

Prefect's own embedded server (`SubprocessASGIServer`) is a uvicorn subprocess on SQLite in
PREFECT_HOME; starting it takes 6 s here, 16 s on a new PREFECT_HOME (its database migrations), and
importing Prefect to start it takes 4 s more. This starts the same subprocess, the same way, from a
process that has not imported Prefect yet, so the imports, the Dask cluster and the server start side
by side. Pinned to the Prefect release in pyproject.toml (the subprocess's arguments and environment
are that release's; tests/test_run_startup.py runs it).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from dupflow.errors import DupflowError

__all__ = ["API_URL_ENV", "ApiStartError", "EmbeddedApi"]

API_URL_ENV = "PREFECT_API_URL"
STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
_START_FAILED = 3  # uvicorn's exit status when it cannot start (its port taken, among other causes)
_RELAUNCHES = 3  # ports tried after the first, when a start fails that way
# Prefect's own range for its embedded server: below the kernel's ephemeral ports, which the local
# cluster's sockets take while the server starts.
_PORTS = range(8000, 9000)


class ApiStartError(DupflowError):
    """The embedded Prefect API server did not come up."""


def _free_port() -> int:
    """A TCP port of _PORTS on 127.0.0.1 that nothing listens on now."""
    for port in random.sample(_PORTS, 50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ApiStartError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1} on 127.0.0.1 for the embedded Prefect "
                        "API: run a Prefect server and export PREFECT_API_URL")


class EmbeddedApi:
    """One embedded Prefect API server: `start()` returns at once (the server comes up in a thread, and
    `PREFECT_API_URL` is exported first, so that Dask workers started meanwhile report to it); `wait()`
    returns its URL once it answers; `stop()` ends it."""

    def __init__(self, timeout: float = 120.0) -> None:
        self.timeout = float(os.environ.get(STARTUP_TIMEOUT_ENV) or timeout)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self._lock = threading.Lock()  # the waiter relaunches and stop() ends: one at a time
        self._stopped = False
        self._waiter = threading.Thread(target=self._wait_ready, name="dupflow-prefect-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def start(cls, timeout: float = 120.0) -> EmbeddedApi:
        """Start a server (its subprocess now, its readiness in the background)."""
        api = cls(timeout)
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # its heartbeat locks the SQLite file
        os.environ[API_URL_ENV] = api.url
        api.process = api._launch()
        atexit.register(api.stop)
        api._waiter.start()
        return api

    def _launch(self) -> subprocess.Popen[bytes]:
        spec = importlib.util.find_spec("prefect")
        if spec is None or spec.origin is None:
            raise ApiStartError("Prefect is not installed in this environment: reinstall dupflow")
        app_dir = Path(spec.origin).parent.parent  # what Prefect gives: the folder that holds the package
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        env.pop(API_URL_ENV, None)  # the server is not a client of itself
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"], env=env)

    def _wait_ready(self) -> None:
        deadline, relaunches = time.monotonic() + self.timeout, 0
        while time.monotonic() < deadline:
            with self._lock:
                if self._stopped or self.process is None:
                    return
                status = self.process.poll()
                if status == _START_FAILED and relaunches < _RELAUNCHES:  # most often its port, taken meanwhile
                    relaunches += 1
                    self.port = _free_port()
                    os.environ[API_URL_ENV] = self.url
                    self.process = self._launch()
                    continue
            if status is not None:
                self.error = f"the embedded Prefect API server exited with status {status} (its output is above)"
                return
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.error = (f"the embedded Prefect API server did not answer within {self.timeout:g} s: raise "
                      f"{STARTUP_TIMEOUT_ENV}, or run a Prefect server and export {API_URL_ENV}")

    def wait(self) -> str:
        """The server's URL once it answers (a first start also creates its database)."""
        self._waiter.join()
        if self.error is not None:
            raise ApiStartError(self.error)
        return self.url

    def stop(self) -> None:
        """Stop the server (and forget its URL); safe to call more than once."""
        with self._lock:
            self._stopped = True
            process, self.process = self.process, None
        if process is None:
            return
        if os.environ.get(API_URL_ENV) == self.url:
            os.environ.pop(API_URL_ENV, None)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
