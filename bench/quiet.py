"""How much of the machine other processes used while we timed something.

On a shared 2-core machine one busy neighbour halves the cores, and a
multi-threaded torch then slows down several times over (its threads wait on
each other at every op), so a timing taken under load says little. The bench
waits for the neighbours to go idle before each timed call, measures their
share during it, and redoes the noisy ones.
"""

from __future__ import annotations

import os
import time

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
