#!/usr/bin/env bash
# Sets up a virtual environment with the test extra (torch==2.13.0 CPU, transformers) and runs the whole suite,
# one worker per core.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# One worker per core, each taking whole modules (their trained fixtures are built once). A worker that
# dies ends the run at once, naming its test: xdist 3.8 with --dist loadfile can wait forever on a
# replacement worker that is never handed work (pytest-dev/pytest-xdist#784, #1323).
exec .venv/bin/python -m pytest -q -n auto --dist loadfile --max-worker-restart=0 "$@"
