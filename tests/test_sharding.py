"""Sharding: the checks that need 8 devices run in their own process; the rest here."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import jax
import pytest
import transformers

from jaxspec import InputError
from jaxspec.sharding import logical_param_axes, parse_mesh
from models import ARCHITECTURES, CausalLM, build_model, from_hf_config
from tests.hf_factory import BASE, FAMILIES
from tests.xla_env import simulated_devices

ARCH_BY_FAMILY = {v: k for k, v in ARCHITECTURES.items()}

ROOT = Path(__file__).resolve().parents[1]


def run_on_eight_devices(check_file: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", check_file],
        cwd=ROOT, env=simulated_devices(8), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


def test_generation_on_a_2x4_mesh():
    run_on_eight_devices("tests/mesh/mesh_generate_checks.py")


def test_loading_straight_into_shards_on_a_2x4_mesh():
    run_on_eight_devices("tests/mesh/mesh_load_checks.py")


def test_projections_split_only_between_whole_heads():
    """A projection packs heads x head_dim into one dimension: it splits over tensor only where the heads
    divide, so no head straddles two devices and the k/v projections follow the KV cache's layout."""
    from jaxspec.memory_plan import abstract_plan
    from jaxspec.sharding import KEY_AXES, describe

    hf_config = {**FAMILIES["qwen3"][0](**{**BASE, **FAMILIES["qwen3"][2]}).to_dict(), "architectures": ["Qwen3ForCausalLM"]}
    model = CausalLM(from_hf_config(hf_config))  # 4 query heads, 2 KV heads, head_dim 32
    params = jax.eval_shape(model.init_params, jax.random.key(0))

    def layout(mesh):
        plan = abstract_plan(mesh).for_model(model)
        d = describe(params, plan)
        return d["layers_0/self_attn/q_proj/kernel"], d["layers_0/self_attn/k_proj/kernel"], str(
            plan.spec(KEY_AXES, (1, 2, 32, 8))[0])

    assert layout("tensor=2") == ("P(None, 'tensor')", "P(None, 'tensor')", "P(None, 'tensor', None, None)")
    # 64 k_proj columns divide over 4 shards, 2 KV heads do not: the projection stays whole, like the cache.
    assert layout("tensor=4") == ("P(None, 'tensor')", "P(None, None)", "P(None, None, None, None)")
    assert layout("tensor=8") == ("P(None, None)", "P(None, None)", "P(None, None, None, None)")
    # Without the model's head counts only the width is checked (what a plan for arrays alone does).
    assert describe(params, abstract_plan("tensor=4"))["layers_0/self_attn/k_proj/kernel"] == "P(None, 'tensor')"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("data=2,tensor=4", "mesh data=2,tensor=4 has 8 devices, but 1 are available"),
        ("rows=1", "bad mesh axis 'rows'"),
        ("data", "expected AXIS=SIZE"),
        ("data=1,data=1", "repeated axis"),
    ],
)
def test_bad_mesh_specs(spec, message):
    with pytest.raises(InputError, match=message):
        parse_mesh(spec)


def _decoder_only(family):
    config_cls, _, opts = FAMILIES[family]
    hf_config = config_cls(**{**BASE, **opts}).to_dict()
    hf_config["architectures"] = [ARCH_BY_FAMILY[hf_config["model_type"]]]
    return build_model(hf_config, "float32")


def _t5(family):
    from tests import hf_seq2seq_factory as t5

    options = t5.FAMILIES[family][0]
    return build_model({**transformers.T5Config(**t5.BASE, **options).to_dict(),
                        "architectures": ["T5ForConditionalGeneration"]}, "float32")


def _t5gemma(tie):
    from tests import hf_t5gemma_factory as tg

    config = transformers.T5GemmaConfig(encoder=transformers.T5GemmaModuleConfig(**tg.ENCODER),
                                        decoder=transformers.T5GemmaModuleConfig(**tg.DECODER),
                                        vocab_size=tg.VOCAB, tie_word_embeddings=tie)
    return build_model({**config.to_dict(), "architectures": ["T5GemmaForConditionalGeneration"]}, "float32")


def _heads(kind):
    from jaxspec.heads_io import target_fields
    from jaxspec.methods import untrained_adapter
    from jaxspec.heads_io import KINDS
    from models.medusa import HeadsConfig

    target = _decoder_only("llama")
    if kind == "exit-adapter":
        return untrained_adapter(target, 1)
    attention = {"attention_heads": 2} if kind in ("hydra", "eagle") else {}  # Hydra++'s prefix layer, EAGLE's
    layers = 1 if kind == "eagle" else 2
    return KINDS[kind](HeadsConfig(kind=kind, num_heads=2, num_layers=layers, **attention, **target_fields(target)))


def _block(variant):
    from tests.block_factory import block_config

    return build_model(block_config(variant, vocab=64))


def _hat():
    from tests.hat_factory import tiny_hat

    return tiny_hat()[0]


MODEL_KINDS = {
    **{family: functools.partial(_decoder_only, family) for family in sorted(FAMILIES)},
    **{family: functools.partial(_t5, family) for family in ("t5_v1_0", "t5_v1_1")},
    "t5gemma": functools.partial(_t5gemma, True),
    "t5gemma-untied": functools.partial(_t5gemma, False),
    "medusa-heads": functools.partial(_heads, "medusa"),
    "hydra-heads": functools.partial(_heads, "hydra"),
    "eagle-heads": functools.partial(_heads, "eagle"),
    "exit-adapter": functools.partial(_heads, "exit-adapter"),
    **{f"block-{v}": functools.partial(_block, v) for v in ("lookup-prefix", "projection-sum-tied")},
    "hat": _hat,
}


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_every_parameter_of_every_model_kind_is_sharded_where_a_mesh_axis_applies(kind):
    """No silent replication: every parameter has logical axes (an unknown one is an error), and on an
    fsdp x tensor mesh each is split over some mesh axis unless none of its axes is mapped to one or the
    mapped ones do not divide it (a fallback the plan reports)."""
    from jaxspec.memory_plan import abstract_plan

    model = MODEL_KINDS[kind]()
    abstract = jax.eval_shape(model.init_params, jax.random.key(0))
    plan = abstract_plan("fsdp=2,tensor=4").for_model(model)
    plan.param_shardings(abstract)  # raises on a parameter without logical axes
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract):
        names = tuple(k.key for k in path)
        axes = logical_param_axes(names, leaf.ndim)
        spec, fallbacks = plan.spec(axes, leaf.shape)
        unmapped = all(not plan.rules.mesh_axes(a) for a in axes)
        assert any(spec) or fallbacks or unmapped, f"{'/'.join(names)} {axes} {leaf.shape} left whole"
    # A train state's params are held to the same rule: an unknown parameter fails, it is not replicated.
    with pytest.raises(ValueError, match="no logical axes"):
        plan.state_shardings({"params": {**abstract, "extra": {"kernel": jax.ShapeDtypeStruct((8, 8), "float32")}}})


def test_logical_axes_by_name():
    assert logical_param_axes(("layers_0", "self_attn", "k_proj", "kernel"), 2) == ("embed", "kv_heads")
    assert logical_param_axes(("layers_0", "post_feedforward_layernorm", "scale"), 1) == ("embed",)
    with pytest.raises(ValueError, match="no logical axes"):
        logical_param_axes(("adapter", "kernel"), 2)
