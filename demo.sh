#!/usr/bin/env bash
# Sets up a virtual environment (runtime dependencies only) and runs the demo on the
# trained model pair shipped in demo/: nothing is downloaded but the Python packages.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/jaxspec demo "$@"
