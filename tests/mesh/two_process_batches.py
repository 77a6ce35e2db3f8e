"""Per-process batch loading across two processes whose devices interleave on the mesh.

Run by tests/test_train_sharded.py as `python -m tests.mesh.two_process_batches COORDINATOR PROCESS_ID`,
twice at once, with 4 CPU devices per process. The mesh's data rows alternate between the processes
(rows 0 and 2 on process 0, 1 and 3 on process 1), as a TPU slice's topology can make them; each process
must read only the rows its devices hold, and the assembled global batches must be the ones a single
process would read. Exits 0 and prints "ok" when they are.
"""

from __future__ import annotations

import sys

from jaxspec.distributed import ClusterSpec, initialize


class RecordingRows:
    """A stand-in for the dataset's memmap that remembers which rows were read."""

    def __init__(self, rows):
        self.rows, self.shape, self.read = rows, rows.shape, set()

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        self.read.update(int(i) for i in index.ravel())
        return self.rows[index]


def main(coordinator: str, process_id: int) -> None:
    initialize(ClusterSpec(coordinator, 2, process_id))

    import jax
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, Mesh

    from jaxspec.sharding import ShardingPlan
    from train.placement import OnMesh

    mine = [d for d in jax.devices() if d.process_index == process_id]
    other = [d for d in jax.devices() if d.process_index != process_id]
    first, second = (mine, other) if process_id == 0 else (other, mine)
    order = first[:2] + second[:2] + first[2:] + second[2:]
    mesh = Mesh(np.array(order).reshape(4, 2), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2)

    batch_size, accum, row_len = 16, 2, 5  # micro-batches of 8 rows: 2 per data row of the mesh
    data = np.arange(40 * row_len, dtype=np.int32).reshape(40, row_len)
    index = np.random.default_rng(0).permutation(40)[:batch_size].reshape(accum, batch_size // accum)
    on_mesh = OnMesh(ShardingPlan(mesh), {}, None, batch_size, accum, row_len)

    rows = RecordingRows(data)
    batch = on_mesh.train_batch(rows, index)
    held = [0, 1, 4, 5] if process_id == 0 else [2, 3, 6, 7]  # micro-batch positions on this process's data rows
    assert rows.read == set(index[:, held].ravel().tolist()), (sorted(rows.read), index)
    np.testing.assert_array_equal(multihost_utils.process_allgather(batch, tiled=True), data[index])

    rows = RecordingRows(data)
    held_out = on_mesh.eval_batches(rows, 8, 3)
    assert rows.read == {i * 8 + p for i in range(3) for p in held}, sorted(rows.read)
    for i, b in enumerate(held_out):
        np.testing.assert_array_equal(multihost_utils.process_allgather(b, tiled=True), data[i * 8 : (i + 1) * 8])
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
