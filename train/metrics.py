"""Metrics as JSON lines, one object per train step or evaluation, each with its "step".

A resumed run first drops the records of steps after the checkpoint it
resumed from (and any line cut short by a kill), so the file always reads as
one uninterrupted run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    """Whole records only: a last line cut short by a kill is skipped."""
    records = []
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class MetricsLog:
    def __init__(self, path: Path, start_step: int):
        self.path = Path(path)
        kept = [r for r in read_metrics(self.path) if r["step"] <= start_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
        self._file = open(self.path, "a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
