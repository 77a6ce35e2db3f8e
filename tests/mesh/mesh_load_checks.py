"""Loading straight into shards on 8 simulated CPU devices: every device's block of every parameter equals
the same slice of the tensor loaded whole, for a single safetensors file and a sharded index (read slice by
slice), a GGUF file and a jaxspec checkpoint (read whole, then placed). Run by tests/test_sharding.py in its
own process (XLA_FLAGS must be set before jax is imported), so this file is not named test_*.py."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import transformers

from jaxspec import load, save
from jaxspec.hf_io import INDEX_FILE
from jaxspec.sharding import ShardingPlan, parse_mesh
from tests.gguf_factory import tokenizer_vocab_size, write_gguf_model
from tests.hf_factory import make_hf_model
from tests.mesh.slice_reads import recording_safe_open

MESH = "data=2,tensor=4"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    make_hf_model("llama", root / "single", num_key_value_heads=2)  # 2 KV heads: k/v replicated over tensor=4
    transformers.AutoModelForCausalLM.from_pretrained(root / "single").save_pretrained(root / "index", max_shard_size="40KB")
    assert (root / "index" / INDEX_FILE).exists()
    save(load(root / "single"), root / "orbax")
    return root


def _assert_blocks_equal_slices(sharded, whole, plan):
    want = plan.param_shardings(whole)
    for (path, array), full, sharding in zip(jax.tree_util.tree_leaves_with_path(sharded), jax.tree_util.tree_leaves(whole),
                                             jax.tree_util.tree_leaves(want)):
        assert array.sharding == sharding, path
        assert array.dtype == full.dtype, path
        for shard in array.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(full)[shard.index], err_msg=str(path))


@pytest.mark.parametrize("name", ["single", "index", "orbax"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_loaded_blocks_equal_slices_of_the_whole_tensor(sources, name, dtype):
    whole = load(sources / name, dtype)
    plan = ShardingPlan(parse_mesh(MESH)).for_model(whole.model)
    _assert_blocks_equal_slices(load(sources / name, dtype, mesh=MESH).params, whole.params, plan)


def test_a_gguf_file_is_placed_on_the_mesh(tmp_path):
    hf = make_hf_model("llama", tmp_path / "hf", vocab_size=tokenizer_vocab_size())
    path = write_gguf_model(hf, "llama", tmp_path / "m.gguf", "F32")
    whole = load(path)
    plan = ShardingPlan(parse_mesh(MESH)).for_model(whole.model)
    _assert_blocks_equal_slices(load(path, mesh=plan).params, whole.params, plan)


def test_a_block_is_read_as_a_slice(sources, monkeypatch):
    """No device's block is cut from a whole tensor read into memory: reads are slices of the stored tensor."""
    reads = []
    monkeypatch.setattr("jaxspec.hf_io.safe_open", recording_safe_open(reads))
    load(sources / "single", mesh=MESH)
    # 96 rows (q_proj: 4 heads x 24, the embedding and the head: 96 ids) split 4 ways over tensor; the MLP's
    # 128 too. Read whole: only what is replicated, the norms and k/v (2 KV heads do not divide 4).
    assert {(stored, block) for stored, block, _ in reads} == {
        ((96, 64), (24, 64)), ((64, 96), (64, 24)), ((128, 64), (32, 64)), ((64, 128), (64, 32)),
        ((48, 64), (48, 64)), ((64,), (64,)),
    }
