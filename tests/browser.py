"""Headless Chromium for the report tests: Debian's chromium and chromium-driver, driven by Selenium.

scripts/install-browser.sh installs both (scripts/test.sh runs it); nothing is downloaded at test time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("DUPFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DUPFLOW_CHROMEDRIVER", "/usr/bin/chromedriver")
# Where screenshots go: the test run's artifacts.
ARTIFACTS = Path(os.environ.get("DUPFLOW_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))

# What the machine needs to stay quiet and offline: no background fetches, no sandbox as root.
_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--disable-extensions", "--window-size=1400,1000"]


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is missing: run scripts/install-browser.sh (Debian's chromium and chromium-driver)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium session that records the console (read it with `driver.get_log('browser')`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="dupflow-chromium-")
    for flag in [*_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
