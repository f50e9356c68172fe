#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver, for the report's browser tests (tests/test_report_browser.py).
# Test tools never download a browser of their own.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
packages=(chromium chromium-driver)
$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null; }
/usr/bin/chromium --version
