"""Loading straight into shards across two processes: each reads only the blocks its own devices hold.

Run by tests/test_train_sharded.py as
`python -m tests.mesh.two_process_loading COORDINATOR PROCESS_ID HF_DIR JAXSPEC_DIR GGUF_FILE`,
twice at once, with 4 CPU devices per process, on an fsdp=2 x tensor=4 mesh whose fsdp rows are the two
processes: every parameter with an embedding dimension is split between them. Each process checks its
devices' blocks against the same slices of the whole tensors, for a safetensors directory (counting
the bytes it read) and for the same params as a jaxspec (orbax) checkpoint and a GGUF file. Prints
"ok <bytes read> <bytes of the checkpoint>".
"""

from __future__ import annotations

import sys

from jaxspec.distributed import ClusterSpec, initialize


def main(coordinator: str, process_id: int, model_dir: str, orbax_dir: str, gguf_file: str) -> None:
    initialize(ClusterSpec(coordinator, 2, process_id))

    import jax
    import numpy as np
    from safetensors import safe_open

    from jaxspec import hf_io, load
    from jaxspec.sharding import ShardingPlan, parse_mesh
    from tests.mesh.slice_reads import recording_safe_open

    reads = []
    hf_io.safe_open = recording_safe_open(reads)
    plan = ShardingPlan(parse_mesh("fsdp=2,tensor=4"))
    assert [d.process_index for d in plan.mesh.devices[0]] == [0] * 4  # fsdp row 0 is process 0
    sharded = load(model_dir, mesh=plan).params
    hf_io.safe_open = safe_open
    whole = load(model_dir).params  # this process's own full read, to compare with
    for (path, array), full in zip(jax.tree_util.tree_leaves_with_path(sharded), jax.tree_util.tree_leaves(whole)):
        assert not array.is_fully_addressable, path  # a global array: the other process holds the rest
        for shard in array.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(full)[shard.index], err_msg=str(path))
    # The orbax checkpoint holds the safetensors' params; the GGUF's are Q8_0, so compared with its own whole
    # load (orbax cannot restore without a target once the job spans two processes).
    for other, reference in ((orbax_dir, whole), (gguf_file, load(gguf_file).params)):
        for (path, array), full in zip(jax.tree_util.tree_leaves_with_path(load(other, mesh=plan).params),
                                       jax.tree_util.tree_leaves(reference)):
            for shard in array.addressable_shards:
                np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(full)[shard.index], err_msg=str(path))
    total = sum(x.nbytes for x in jax.tree_util.tree_leaves(whole))
    # Every block this process's 4 devices read (a block two of them hold is read twice).
    print("ok", sum(nbytes for _, _, nbytes in reads), total)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
