"""Generation on a 2x4 mesh of 8 simulated CPU devices. Run by tests/test_sharding.py in its own process
(XLA_FLAGS must be set before jax is imported), so this file is not named test_*.py."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import pytest
from jax.sharding import PartitionSpec as P

import jaxspec
from jaxspec import SamplingConfig, load
from jaxspec.cli import main as cli_main
from jaxspec.generate import generate
from jaxspec.drafters.draft_model import DraftModel
from jaxspec.heads_io import save_heads, target_fields
from jaxspec.sharding import KEY_AXES, ShardingPlan, parse_mesh
from models.eagle import EAGLE, EagleHeads
from models.medusa import HeadsConfig
from tests.hf_factory import make_hf_model
from tests.hf_seq2seq_factory import make_t5
from tests.hf_t5gemma_factory import make_t5gemma
from tests.random_models import perturbed

PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14], [1, 2], [3], [4, 5, 6], [7, 8]]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh")
    make_hf_model("llama", root / "gqa2", num_key_value_heads=2)  # kv_heads 2 < tensor 4
    make_hf_model("qwen3", root / "gqa4", num_key_value_heads=4)
    make_hf_model("llama", root / "draft", num_hidden_layers=1, seed=5)
    make_hf_model("llama", root / "draft4", num_hidden_layers=1, num_key_value_heads=4, seed=6)
    return root


@pytest.fixture(scope="module")
def seq2seq_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq2seq")
    make_t5("t5_v1_1", root / "t5")  # 4 heads: its caches split over tensor=4
    make_t5("t5_v1_1", root / "t5-draft", seed=3)
    make_t5gemma(root / "t5gemma")  # 2 KV heads: its caches replicated over tensor=4, rows still split
    make_t5gemma(root / "t5gemma-draft", seed=3)
    return root


def test_eight_devices():
    assert jax.device_count() == 8


# Each cache layout once, each sampling path once: greedy where 2 KV heads are replicated over tensor=4,
# top-k sampling where 4 split.
@pytest.mark.parametrize("name, cfg", [("gqa2", SamplingConfig()), ("gqa4", SamplingConfig(temperature=1.0, top_k=20))])
def test_generate_on_mesh_equals_one_device(dirs, name, cfg):
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
    one = generate(lm.model, lm.params, PROMPTS, max_new_tokens=12, sampling=cfg, seed=4)
    many = generate(lm.model, params, PROMPTS, max_new_tokens=12, sampling=cfg, seed=4, plan=plan)
    assert [r.output_ids for r in one] == [r.output_ids for r in many]


# KV heads splitting over tensor=4; replication where they do not is test_cli_mesh_flag's (gqa2) and
# test_cache_layout_falls_back_when_kv_heads_do_not_divide's.
@pytest.mark.parametrize("target, draft, cache_spec", [("gqa4", "draft4", P("data", "tensor"))])
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


def test_cli_mesh_flag(dirs, capsys):
    base = ["generate", "--model", dirs / "gqa2", "--prompt-ids", "5,6,7", "--prompt-ids", "8", "--max-new-tokens", "8", "--json"]
    plain, meshed = _cli(*base), _cli(*base, "--mesh", "data=2,tensor=4")
    assert meshed.returncode == 0, meshed.stderr
    assert [json.loads(x)["output_ids"] for x in plain.stdout.splitlines()] == [
        json.loads(x)["output_ids"] for x in meshed.stdout.splitlines()
    ]
    assert "KV cache layout: kv_heads=2 does not divide over tensor=4: replicated" in meshed.stderr
    # A bad mesh fails before anything loads: checked in this process, which sees the same 8 devices.
    assert cli_main([str(a) for a in base] + ["--mesh", "data=3"]) == 2
    assert capsys.readouterr().err.strip() == "jaxspec: error: mesh data=3 has 3 devices, but 8 are available"


@pytest.mark.parametrize("name, cache_spec", [("t5", P("data", "tensor")), ("t5gemma", P("data"))])
def test_encoder_decoder_models_on_mesh_equal_one_device(seq2seq_dirs, name, cache_spec):
    """Loaded straight into shards, plain (sampled) and draft-model (greedy) decoding give what one device
    gives; the whole cross cache (self-attention K/V, cross K/V, source mask) is laid out on the mesh."""
    plan = ShardingPlan(parse_mesh("data=2,tensor=4"))
    one, one_draft = load(seq2seq_dirs / name), load(seq2seq_dirs / f"{name}-draft")
    lm, draft = load(seq2seq_dirs / name, mesh=plan), load(seq2seq_dirs / f"{name}-draft", mesh=plan)
    queries = [x for path, x in jax.tree_util.tree_leaves_with_path(lm.params) if path[-2].key in ("q", "q_proj")]
    assert queries and all(x.sharding.spec == P(None, "tensor") for x in queries)  # 4 heads over tensor=4
    for method, temperature in [("autoregressive", 1.0), ("draft-model", 0.0)]:
        kw = dict(method=method, max_new_tokens=10, temperature=temperature, seed=4, num_draft_tokens=3)
        a = jaxspec.generate(one, PROMPTS, draft=one_draft if method == "draft-model" else None, **kw)
        b = jaxspec.generate(lm, PROMPTS, draft=draft if method == "draft-model" else None, mesh=plan, **kw)
        assert [r.output_ids for r in a] == [r.output_ids for r in b], (method, temperature)
    final = []
    generate(lm.model, lm.params, PROMPTS, max_new_tokens=4, drafter=DraftModel(draft.model, 2, SamplingConfig()),
             drafter_params=draft.params, plan=plan.for_model(lm.model), drafter_state_to=final.append)
    cache = final[0].cache
    assert cache.self_attn.keys[0].sharding.spec == cache.cross_keys[0].sharding.spec == cache_spec
    assert cache.cross_values[0].sharding.spec == cache_spec and cache.source_mask.sharding.spec == P("data")


@pytest.fixture(scope="module")
def heads_dir(dirs):
    lm = load(dirs / "gqa4")
    # An EAGLE drafter: scoring through the sharded embedding (as every head kind does) and a cache of its own
    # (with scratch slots past the target's length) laid out like the target's.
    heads = EagleHeads(HeadsConfig(kind=EAGLE, num_heads=2, num_layers=1, attention_heads=2, **target_fields(lm.model)))
    save_heads(dirs / "heads", heads, perturbed(heads.init_params(jax.random.key(0)), 1, 0.5))
    return dirs / "heads"


@pytest.mark.parametrize("method, temperature, options", [
    ("eagle", 1.0, {"tree_size": 6}),
    ("early-exit", 0.0, {"exit_layer": 1, "num_draft_tokens": 3}),
    ("layer-skip", 1.0, {"skip_layers": "a1", "num_draft_tokens": 3}),
])
def test_self_and_head_drafting_on_mesh_equal_one_device(dirs, heads_dir, method, temperature, options):
    """Draft heads, an exit adapter and the target's own skipped layers draft from the target's sharded
    params (nothing copied back to one device), with their own params placed on the mesh."""
    if method == "eagle":
        options = {**options, "heads": str(heads_dir)}
    one, lm = load(dirs / "gqa4"), load(dirs / "gqa4", mesh="data=2,tensor=4")
    kw = dict(method=method, max_new_tokens=10, temperature=temperature, seed=4, **options)
    a = jaxspec.generate(one, PROMPTS, **kw)
    b = jaxspec.generate(lm, PROMPTS, mesh="data=2,tensor=4", **kw)
    assert [r.output_ids for r in a] == [r.output_ids for r in b]
    assert max(n for r in b for n in r.accept_lengths) > 1  # drafts were accepted, so the drafter really ran


def test_block_transformer_on_mesh_equals_one_device():
    """Both decoders' params and the nested caches (block and local K/V, block tokens, logits) laid out on
    the mesh; the output equals one device's."""
    from tests.block_factory import tiny_block

    model, params, _ = tiny_block("lookup-prefix", vocab=64)
    plan = ShardingPlan(parse_mesh("data=2,tensor=4")).for_model(model)
    sharded = plan.shard_params(params)
    gate = sharded["token_decoder"]["layers_0"]["mlp"]["gate_proj"]["kernel"]
    assert gate.sharding.spec == P(None, "tensor")  # (the heads: 2 in the token decoder do not split over 4)
    assert sharded["embedder"]["embedding"].sharding.spec == P("tensor", None)
    cfg = SamplingConfig(temperature=1.0, top_k=20)
    one = generate(model, params, PROMPTS, max_new_tokens=10, sampling=cfg, seed=4)
    many = generate(model, sharded, PROMPTS, max_new_tokens=10, sampling=cfg, seed=4, plan=plan)
    assert [r.output_ids for r in one] == [r.output_ids for r in many]


def test_hat_on_mesh_equals_one_device():
    """The three stacks' params, the connector's and the byte and word caches laid out on the mesh; rows
    closing words at different steps give the output of one device."""
    from tests.hat_factory import tiny_hat

    model, params, _ = tiny_hat()
    plan = ShardingPlan(parse_mesh("data=2,tensor=4")).for_model(model)
    sharded = plan.shard_params(params)
    assert sharded["connector"]["key"]["kernel"].sharding.spec == P(None, "tensor")
    assert sharded["backbone"]["layers_0"]["mlp"]["gate_proj"]["kernel"].sharding.spec == P(None, "tensor")
    prompts = [list(b"Hello, wor"), list(b"a"), list(b"camelCase and"), list(b"x y z")] * 2
    cfg = SamplingConfig(temperature=1.0, top_k=20)
    one = generate(model, params, prompts, max_new_tokens=12, sampling=cfg, seed=4)
    many = generate(model, sharded, prompts, max_new_tokens=12, sampling=cfg, seed=4, plan=plan)
    assert [r.output_ids for r in one] == [r.output_ids for r in many]
