"""XLA settings for the test processes and the processes they start.

The suite compiles hundreds of small programs and runs few of them for long, so
LLVM's optimisation passes cost more than they save: at level 0 a module of tiny
models runs about 20% faster, and the reference model's ragged-batch test no
slower (its large products are library calls, not generated code). Semantics do
not change. The library never sets XLA options; only the tests do, here.
"""

from __future__ import annotations

import os

TEST_FLAGS = "--xla_backend_optimization_level=0"


def with_test_flags(flags: str) -> str:
    """`flags` with the suite's settings added once."""
    return flags if TEST_FLAGS in flags else f"{flags} {TEST_FLAGS}".strip()


def simulated_devices(count: int, env: dict | None = None) -> dict:
    """An environment (os.environ by default) whose JAX sees `count` CPU devices, with the suite's settings."""
    env = dict(os.environ if env is None else env)
    env["XLA_FLAGS"] = with_test_flags(f"--xla_force_host_platform_device_count={count}")
    env["JAX_PLATFORMS"] = "cpu"
    return env
