#!/usr/bin/env bash
# Installs everything the project needs into the current Python (3.10+), from the project's own files.
# torch is pinned in requirements.txt so that pip takes the CPU wheel instead of several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
python -m pip install --disable-pip-version-check -q --no-deps -e .
