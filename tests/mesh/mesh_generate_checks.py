"""Generation on a 2x4 mesh of 8 simulated CPU devices. Run by tests/test_sharding.py in its own process
(XLA_FLAGS must be set before jax is imported), so this file is not named test_*.py."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import pytest
from jax.sharding import PartitionSpec as P

from jaxspec import SamplingConfig, load
from jaxspec.generate import generate
from jaxspec.drafters.draft_model import DraftModel
from jaxspec.sharding import KEY_AXES, ShardingPlan, parse_mesh
from tests.hf_factory import make_hf_model

PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14], [1, 2], [3], [4, 5, 6], [7, 8]]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh")
    make_hf_model("llama", root / "gqa2", num_key_value_heads=2)  # kv_heads 2 < tensor 4
    make_hf_model("qwen3", root / "gqa4", num_key_value_heads=4)
    make_hf_model("llama", root / "draft", num_hidden_layers=1, seed=5)
    make_hf_model("llama", root / "draft4", num_hidden_layers=1, num_key_value_heads=4, seed=6)
    return root


def test_eight_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("name", ["gqa2", "gqa4"])
def test_generate_on_mesh_equals_one_device(dirs, name):
    lm = load(dirs / name)
    plan = ShardingPlan(parse_mesh("data=2,tensor=4")).for_model(lm.model)
    params = plan.shard_params(lm.params)
    q = params["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == P(None, "tensor") and len(q.sharding.device_set) == 8
    assert q.addressable_shards[0].data.shape == (q.shape[0], q.shape[1] // 4)  # really split
    # The k/v projections split as the cache does: by whole KV heads, or not at all where 2 heads meet 4 shards.
    k = params["layers_0"]["self_attn"]["k_proj"]["kernel"]
    assert k.sharding.spec == (P(None, None) if name == "gqa2" else P(None, "tensor"))
    assert params["embed_tokens"]["embedding"].sharding.spec == P("tensor", None)
    for cfg in (SamplingConfig(), SamplingConfig(temperature=1.0, top_k=20)):
        one = generate(lm.model, lm.params, PROMPTS, max_new_tokens=12, sampling=cfg, seed=4)
        many = generate(lm.model, params, PROMPTS, max_new_tokens=12, sampling=cfg, seed=4, plan=plan)
        assert [r.output_ids for r in one] == [r.output_ids for r in many]


@pytest.mark.parametrize("target, draft, cache_spec", [
    ("gqa2", "draft", P("data")),  # the draft's 2 KV heads replicated over tensor=4, as the target's are
    ("gqa4", "draft4", P("data", "tensor")),
])
def test_speculative_on_mesh_equals_one_device(dirs, target, draft, cache_spec):
    lm, draft = load(dirs / target), load(dirs / draft)
    plan = ShardingPlan(parse_mesh("data=2,tensor=4"))
    drafter = DraftModel(draft.model, 3, SamplingConfig())
    one = generate(lm.model, lm.params, PROMPTS, max_new_tokens=12, drafter=drafter, drafter_params=draft.params)
    final = []
    many = generate(
        lm.model, plan.for_model(lm.model).shard_params(lm.params), PROMPTS, max_new_tokens=12, drafter=drafter,
        drafter_params=plan.for_model(draft.model).shard_params(draft.params), plan=plan, drafter_state_to=final.append,
    )
    assert [r.output_ids for r in one] == [r.output_ids for r in many]
    # The draft cache is pinned as the target's is: rows over data, KV heads over tensor where they divide.
    cache = final[0].cache
    assert cache.keys[0].sharding.spec == cache.values[0].sharding.spec == cache_spec


def test_cache_layout_falls_back_when_kv_heads_do_not_divide(dirs):
    plan = ShardingPlan(parse_mesh("data=2,tensor=4"))
    spec, notes = plan.spec(KEY_AXES, (8, 2, 24, 64))
    assert spec == P("data", None, None, None)
    assert notes == ["kv_heads=2 does not divide over tensor=4: replicated"]
    spec, notes = plan.spec(KEY_AXES, (8, 4, 24, 64))
    assert spec == P("data", "tensor", None, None) and notes == []


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "jaxspec", *map(str, args)], capture_output=True, text=True)


def test_cli_mesh_flag(dirs):
    base = ["generate", "--model", dirs / "gqa2", "--prompt-ids", "5,6,7", "--prompt-ids", "8", "--max-new-tokens", "8", "--json"]
    plain, meshed = _cli(*base), _cli(*base, "--mesh", "data=2,tensor=4")
    assert meshed.returncode == 0, meshed.stderr
    assert [json.loads(x)["output_ids"] for x in plain.stdout.splitlines()] == [
        json.loads(x)["output_ids"] for x in meshed.stdout.splitlines()
    ]
    assert "KV cache layout: kv_heads=2 does not divide over tensor=4: replicated" in meshed.stderr
    bad = _cli(*base, "--mesh", "data=3")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "jaxspec: error: mesh data=3 has 3 devices, but 8 are available"
