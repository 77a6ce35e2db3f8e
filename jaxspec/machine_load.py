"""How much of the machine other processes used while we timed something, and timing that takes it into account.

On a shared 2-core machine one busy neighbour halves the cores, and a
multi-threaded torch then slows down several times over (its threads wait on
each other at every op), so a timing taken under load says little. The
benches (`jaxspec bench`, bench/) measure the neighbours' share during each
timed call and redo a disturbed one once they have gone idle.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, NamedTuple

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all processes have used, from /proc/stat (user nice system idle iowait irq softirq steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    # Steal is time the hypervisor gave our vCPUs to someone else: load too.
    return (user + nice + system + irq + softirq + steal) / _TICKS


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class OtherLoad:
    """Context manager; afterwards `.fraction` is the share of all cores that other processes used."""

    def __enter__(self):
        self._start = (time.perf_counter(), _machine_busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc):
        wall, busy, own = time.perf_counter(), _machine_busy_seconds(), _own_seconds()
        wall -= self._start[0]
        others = (busy - self._start[1]) - (own - self._start[2])
        self.fraction = max(0.0, others / (wall * os.cpu_count()))
        return False


def wait_until_idle(max_share: float, patience: float, probe: float = 2.0) -> None:
    """Sleeps until others use at most `max_share` of the cores over a `probe`-second window, or `patience` s pass."""
    deadline = time.perf_counter() + patience
    while True:
        with OtherLoad() as load:
            time.sleep(probe)
        if load.fraction <= max_share or time.perf_counter() > deadline:
            return


class Timing(NamedTuple):
    value: Any  # what the timed function returned
    seconds: float
    other_load: float  # share of all cores other processes used meanwhile


def timed(
    fn: Callable[[], Any], *, max_other_load: float | None = None, patience: float = 120.0, attempts: int = 1,
    label: str | None = None,
) -> Timing:
    """fn() timed, with the share of the cores others took meanwhile.

    With `max_other_load`, a try during which others took more than that
    share is redone, after waiting (up to `patience` seconds) for them to go
    idle, up to `attempts` tries in all; if none is clean, the last counts. (A
    quiet machine pays no wait: a bench makes hundreds of short calls.)
    Without it, one try: the share is recorded for the reader to judge.
    `label` prints each try's figures to stderr.
    """
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            wait_until_idle(max_other_load, patience)
        with OtherLoad() as load:
            start = time.perf_counter()
            value = fn()
            seconds = time.perf_counter() - start
        if label:
            print(f"  {label} {seconds:.2f}s (others used {load.fraction:.0%} of the cores)", file=sys.stderr, flush=True)
        if max_other_load is None or load.fraction <= max_other_load or attempt == attempts:
            return Timing(value, seconds, load.fraction)
