"""The memory-bandwidth roofline of decoding on this machine.

Each decode step reads every weight once, whatever the batch, so the fastest a
memory-bound loop can step is bandwidth ÷ weight bytes. The bandwidth is
measured here, on the same machine, rather than taken from a spec sheet.
"""

from __future__ import annotations

import time

import torch

GIB = 1 << 30


def read_bandwidth(threads: int, gib: float = 1.0, repeats: int = 10) -> float:
    """Bytes/s of a streaming read: a sum over `gib` GiB of float32 on `threads` cores, best of `repeats`.

    A read, not a copy: decoding only reads its weights. torch's sum is
    vectorised and multi-threaded, so it is limited by memory, not by the
    adds; NumPy's single-threaded sum reaches about half of it here.
    """
    torch.set_num_threads(threads)
    data = torch.ones(int(gib * GIB) // 4, dtype=torch.float32)
    data.sum()  # page in and warm up the thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.numel() * 4 / best


def roofline_fraction(weight_bytes: int, steps_per_s: float, bandwidth: float) -> float:
    """How much of the bandwidth the loop's weight reads use: weight bytes × steps/s ÷ bytes/s."""
    return weight_bytes * steps_per_s / bandwidth
