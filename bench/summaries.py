"""The committed summaries behind docs/benchmarks.md: what each table shows, the command that measured it, and where.

Raw results (every timing, every output) go to bench/results/, which git
ignores; a bench run with `--summary` also writes the rows its docs table
shows to bench/summaries/NAME.json, which is committed. `python -m
bench.docs_tables` rebuilds the tables in docs/benchmarks.md from these files,
so no table there can differ from what a script measured.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

DIR = Path(__file__).parent / "summaries"


def machine() -> dict:
    """What the figures depend on besides the code: cores, processor, library versions."""
    import jax

    versions = {"jax": jax.__version__}
    for name in ("torch", "transformers"):
        if name in sys.modules:
            versions[name] = sys.modules[name].__version__
    return dict(cpu_cores=os.cpu_count(), processor=_processor(), versions=versions)


def _processor() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command(module: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", module, *args])


def write(
    name: str, module: str, argv: list[str] | None, rows: list[dict], measured_on: dict | None = None, **extra
) -> Path:
    """Writes bench/summaries/NAME.json: the rows, the command, the date and the machine (and `extra`);
    `measured_on` is the machine() of another host that measured the rows, where this one only summarises."""
    path = DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = dict(
        command=command(module, argv), date=datetime.date.today().isoformat(), machine=measured_on or machine(),
        **extra, rows=rows,
    )
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def read(name: str) -> dict:
    return json.loads((DIR / f"{name}.json").read_text())
