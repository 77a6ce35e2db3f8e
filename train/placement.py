"""Where a run's arrays live: the default device, or a device mesh that may span processes.

`SingleDevice` is the trainer as it always was: the state is built eagerly,
batches are numpy arrays and jit puts everything on the default device.

`OnMesh` creates the train state with a jitted init whose out_shardings are
`plan.state_shardings` (params by their logical axes, optimizer moments like
their params, step and rng replicated), so no device ever holds more than its
shards. Batches [accum, micro, T + 1] are sharded over the mesh axes of
"batch" (data, fsdp) on the micro-batch dimension; the accumulation dimension
is scanned over, so it stays whole. In a multi-process run each process reads
only the rows its own devices hold, and the global batch is assembled with
`jax.make_array_from_process_local_data`; every process draws the same row
indices, so the global batch is the one a one-process run draws.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from jaxspec.sharding import ShardingPlan
from train.dataset import eval_batches
from train.errors import TrainingError
from train.step import StepShardings


def is_primary() -> bool:
    """Process 0 alone writes run.json, metrics.jsonl, the progress bar and the exported model."""
    return jax.process_index() == 0


class SingleDevice:
    shardings = None

    @staticmethod
    def new_state(fresh_state: Callable[[], dict]) -> dict:
        return fresh_state()

    @staticmethod
    def restore_target(abstract_state):
        """The default device, named: orbax would otherwise look for the devices the checkpoint was saved
        from, which a run saved on a mesh no longer has."""
        device = SingleDeviceSharding(jax.devices()[0])
        return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract_state)

    @staticmethod
    def put_frozen(frozen):
        return frozen

    @staticmethod
    def train_batch(rows: np.ndarray, index: np.ndarray):
        """The rows at `index` [accum, micro] as the step's int32 batch [accum, micro, T + 1]."""
        return np.asarray(rows[index.ravel()]).astype(np.int32).reshape(*index.shape, -1)

    @staticmethod
    def eval_batches(rows: np.ndarray, micro: int, max_batches: int) -> list:
        return [jnp.asarray(b, jnp.int32) for b in eval_batches(rows, micro, max_batches)]

    @staticmethod
    def host_params(params):
        return params


def _local_positions(sharding: NamedSharding, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """The positions along `axis` that this process's devices hold, in the order
    jax.make_array_from_process_local_data expects them: its distinct shards by where they start. They need
    not be contiguous: on a TPU slice a host's chips may sit in rows 0 and 2 of a mesh axis."""
    spans = sorted(
        {index[axis].indices(shape[axis])[:2] for index in sharding.addressable_devices_indices_map(shape).values()}
    )
    return np.concatenate([np.arange(start, stop) for start, stop in spans])


class OnMesh:
    def __init__(self, plan: ShardingPlan, abstract_state, frozen, batch_size: int, accum: int, row_len: int):
        mesh = plan.mesh
        axes = [a for a in plan.rules.mesh_axes("batch") if a in mesh.shape]
        ways = math.prod(mesh.shape[a] for a in axes)
        micro = batch_size // accum
        if micro % ways:
            over = "x".join(f"{a}={mesh.shape[a]}" for a in axes)
            raise TrainingError(
                f"micro-batch of {micro} rows (batch size {batch_size} / accum {accum}) does not divide over {over}"
            )
        rows_spec = plan.batch_sharding((micro, row_len)).spec
        self.shardings = StepShardings(
            state=plan.state_shardings(abstract_state),
            batch=NamedSharding(mesh, PartitionSpec(None, *rows_spec)),
            eval_batch=NamedSharding(mesh, rows_spec),
            frozen=None if frozen is None else plan.param_shardings(frozen),
            replicated=NamedSharding(mesh, PartitionSpec()),
        )

    def new_state(self, fresh_state: Callable[[], dict]) -> dict:
        return jax.jit(fresh_state, out_shardings=self.shardings.state)()

    def restore_target(self, abstract_state):
        """What orbax restores into: global arrays laid out as a fresh state's."""
        return jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, self.shardings.state
        )

    def put_frozen(self, frozen):
        """The teacher's params, which every process loaded whole, as global arrays sharded like params."""
        if frozen is None:
            return None

        def put(x, sharding):
            host = np.asarray(x)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        return jax.tree_util.tree_map(put, frozen, self.shardings.frozen)

    def train_batch(self, rows: np.ndarray, index: np.ndarray) -> jax.Array:
        shape = (*index.shape, rows.shape[1])
        mine = index[:, _local_positions(self.shardings.batch, shape, axis=1)]
        local = np.asarray(rows[mine.ravel()]).astype(np.int32).reshape(*mine.shape, -1)
        return jax.make_array_from_process_local_data(self.shardings.batch, local, shape)

    def eval_batches(self, rows: np.ndarray, micro: int, max_batches: int) -> list:
        """The same batches as dataset.eval_batches, each process reading only its rows of each."""
        shape = (micro, rows.shape[1])
        mine = _local_positions(self.shardings.eval_batch, shape, axis=0)
        return [
            jax.make_array_from_process_local_data(
                self.shardings.eval_batch, np.asarray(rows[i * micro + mine]).astype(np.int32), shape
            )
            for i in range(min(len(rows) // micro, max_batches))
        ]

    def host_params(self, params):
        """The full params in this process's memory; a collective, so every process calls it. One jitted
        gather for the whole tree rather than one program per leaf."""
        whole = jax.jit(lambda tree: tree, out_shardings=self.shardings.replicated)(params)
        return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), whole)
