"""`jaxspec plan` against the arrays it plans for, on 8 simulated CPU devices: params placed as generate
places them, the KV cache as the decode loop pins it, and the train state as the trainer creates it hold
exactly the bytes per device the plan computed from the config alone. Run by tests/test_memory_plan.py
in its own process (XLA_FLAGS must be set before jax is imported), so this file is not named test_*.py."""

from __future__ import annotations

import jax
import pytest

from jaxspec import load
from jaxspec.memory_plan import plan_memory
from jaxspec.sharding import ShardingPlan, parse_mesh
from tests.hf_factory import make_hf_model
from train.optimizer import OptimizerConfig, make_optimizer
from train.placement import OnMesh
from train.step import init_state

BATCH, MAX_LEN = 8, 24


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    make_hf_model("llama", root / "gqa2", num_key_value_heads=2)  # kv_heads 2 < tensor 4: the cache falls back
    make_hf_model("qwen3", root / "gqa4", num_key_value_heads=4)
    make_hf_model("gemma3", root / "gemma3")
    return root


def _per_device(tree) -> dict:
    """Bytes each device holds of the arrays in `tree`."""
    held = {d: 0 for d in jax.devices()}
    for array in jax.tree_util.tree_leaves(tree):
        for shard in array.addressable_shards:
            held[shard.device] += shard.data.nbytes
    return held


def _only(held: dict) -> int:
    assert len(set(held.values())) == 1, held  # the rules shard evenly or replicate: every device holds the same
    return next(iter(held.values()))


@pytest.mark.parametrize("name, dtype, mesh", [
    ("gqa2", "float32", "data=2,tensor=4"),  # the cache's heads replicated over tensor
    ("gqa4", "float32", "fsdp=8"),
    ("gqa4", "float32", "tensor=8"),  # 4 KV heads, 8 shards: replicated; 4 query heads too
    ("gemma3", "bfloat16", "data=2,fsdp=2,tensor=2"),
])
def test_plan_equals_the_bytes_of_the_placed_arrays(dirs, name, dtype, mesh):
    lm = load(dirs / name, dtype)
    plan = plan_memory(lm.model, mesh, BATCH, MAX_LEN)
    sharding = ShardingPlan(parse_mesh(mesh)).for_model(lm.model)  # as generate and the trainer shard it

    assert _only(_per_device(sharding.shard_params(lm.params))) == plan.params
    cache = jax.jit(lambda: sharding.constrain_cache(lm.model.init_cache(BATCH, MAX_LEN)))()
    assert _only(_per_device(cache)) == plan.kv_cache

    def fresh_state():
        return init_state(lm.model.init_params(jax.random.key(1)), make_optimizer(OptimizerConfig()), jax.random.key(2))

    placement = OnMesh(sharding, jax.eval_shape(fresh_state), None, BATCH, 1, MAX_LEN + 1)
    assert _only(_per_device(placement.new_state(fresh_state))) == plan.train_params + plan.optimizer
    assert plan.gradients == plan.train_params


def test_kv_heads_the_tensor_axis_does_not_divide_are_replicated_and_reported(dirs):
    lm = load(dirs / "gqa2")
    split, replicated = plan_memory(lm.model, "data=2,tensor=4", BATCH, MAX_LEN), plan_memory(lm.model, "data=8", BATCH, MAX_LEN)
    # Two KV heads do not divide over tensor=4, so the cache is sharded over data=2 alone: 4 rows per device
    # with both heads, against 1 row per device on data=8.
    assert split.kv_cache == 4 * replicated.kv_cache
    assert any("kv_heads=2 does not divide over tensor=4" in note for note in split.fallbacks)
