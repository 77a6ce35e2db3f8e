"""Joining several processes (hosts) into one JAX runtime.

On a Cloud TPU slice `jax.distributed.initialize()` needs no arguments: it
reads the topology from the metadata server. Elsewhere (several CPU processes,
GPU hosts) it needs the coordinator address, the number of processes and this
process's id, which come from flags or from the environment variables below.
On CPU the cross-process collectives are gloo's.
"""

from __future__ import annotations

import dataclasses
import os

import jax

from jaxspec.errors import InputError

ENV_COORDINATOR = "JAXSPEC_COORDINATOR"  # host:port of process 0
ENV_NUM_PROCESSES = "JAXSPEC_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXSPEC_PROCESS_ID"


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    tpu: bool = False  # let JAX discover the slice on its own

    @classmethod
    def from_env(cls, coordinator=None, num_processes=None, process_id=None) -> "ClusterSpec":
        """Flags win over the environment; returns an empty spec when nothing asks for multi-process."""
        env = os.environ
        coordinator = coordinator or env.get(ENV_COORDINATOR)
        num = num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES)
        pid = process_id if process_id is not None else env.get(ENV_PROCESS_ID)
        try:
            num = int(num) if num is not None else None
            pid = int(pid) if pid is not None else None
        except ValueError:
            raise InputError("number of processes and process id must be integers") from None
        return cls(coordinator, num, pid)

    @property
    def requested(self) -> bool:
        return self.tpu or self.coordinator is not None

    def validate(self) -> None:
        if self.tpu:
            return
        if self.coordinator is None and (self.num_processes is not None or self.process_id is not None):
            raise InputError("a multi-process run needs a coordinator address (host:port)")
        if self.coordinator is not None:
            if self.num_processes is None or self.process_id is None:
                raise InputError("a multi-process run needs --num-processes and --process-id")
            if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
                raise InputError(
                    f"process id {self.process_id} is not in [0, {self.num_processes}) processes"
                )
            if ":" not in self.coordinator:
                raise InputError(f"coordinator {self.coordinator!r} must be host:port")


def initialize(spec: ClusterSpec) -> None:
    """Joins the cluster described by `spec`; a no-op for a single-process run."""
    spec.validate()
    if not spec.requested:
        return
    if spec.tpu:
        jax.distributed.initialize()
        return
    # Only the CPU client reads this; it must be set before the backend starts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=spec.coordinator,
        num_processes=spec.num_processes,
        process_id=spec.process_id,
    )
