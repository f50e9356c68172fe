#!/usr/bin/env bash
# Debian's wallpaper packages, whose photographs (and one picture shipped at three sizes) feed
# bench/accuracy.py. Licences are read from each package's copyright file into the set's SOURCES.md.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
packages=(mate-backgrounds ukui-wallpapers lomiri-wallpapers)
$SUDO apt-get install -y -q --no-install-recommends "${packages[@]}" \
  || { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"; }
