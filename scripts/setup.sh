#!/usr/bin/env bash
# Installs everything the project needs into the current Python (3.10+), from the project's own files.
# torch is pinned in requirements.txt so that pip takes the CPU wheel instead of several GB of CUDA packages.
# The browser tests use Debian's Chromium: installed with apt-get when missing and apt-get is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
python -m pip install --disable-pip-version-check -q --no-deps -e .
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo -n"; fi
  if ! ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null); then
    echo "setup: could not install Chromium with apt-get; the browser tests will be skipped." >&2
  fi
fi
