"""`jaxspec plan`: exact against placed arrays on 8 devices (its own process), its estimates against XLA's
own accounting of a compiled program, and the command line."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from jaxspec import InputError, load
from jaxspec.cli import main
from jaxspec.memory_plan import VERIFY_WIDTH, plan_memory
from tests.hf_factory import make_hf_model
from tests.test_sharding import run_on_eight_devices
from train.step import lm_objective


def test_plan_equals_the_placed_arrays_on_eight_devices():
    run_on_eight_devices("tests/mesh/mesh_plan_checks.py")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan")
    make_hf_model("llama", path, hidden_size=256, intermediate_size=512, num_attention_heads=8, num_key_value_heads=4)
    return path


@pytest.mark.parametrize("batch, length", [(4, 64), (8, 128), (1, 512)])
def test_activation_estimates_are_within_a_factor_of_what_xla_allocates(model_dir, batch, length):
    """The estimates against the temporary buffers XLA's CPU compiler plans for the same programs: a
    training gradient, a prefill of half the length and a verify step."""
    lm = load(model_dir)
    plan = plan_memory(lm.model, "data=1", batch, length)
    loss = lm_objective(lm.model, 0.0)
    rows = jnp.zeros((batch, length + 1), jnp.int32)
    grad = jax.jit(jax.grad(lambda params: loss(params, rows, None, None)[0]))
    train_temp = grad.lower(lm.params).compile().memory_analysis().temp_size_in_bytes
    assert 0.5 < plan.train_activations / train_temp < 2.0

    def forward(params, cache, tokens):
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        return lm.model.forward(params, tokens, positions, cache).logits

    cache = lm.model.init_cache(batch, length)
    temps = [
        jax.jit(forward).lower(lm.params, cache, jnp.zeros((batch, w), jnp.int32)).compile().memory_analysis()
        for w in (length // 2, VERIFY_WIDTH)
    ]
    xla = max(m.temp_size_in_bytes + m.output_size_in_bytes for m in temps)
    assert 0.5 < plan.decode_activations / xla < 2.0


def test_plan_command(model_dir, capsys):
    assert main(["plan", "--model", str(model_dir), "--mesh", "data=2,tensor=4", "--batch-size", "8",
                 "--max-len", "64", "--device-memory", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "decoding:" in out and "training:" in out and "does not fit in 0.001 GiB" in out
    assert main(["plan", "--model", str(model_dir), "--mesh", "fsdp=4", "--batch-size", "4", "--max-len", "64",
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    plan = plan_memory(load(model_dir).model, "fsdp=4", 4, 64)
    assert row == json.loads(json.dumps(plan.as_dict()))
    assert row["train_total"] == row["train_params"] + row["optimizer"] + row["gradients"] + row["train_activations"]


def test_plan_reads_only_the_config(model_dir, tmp_path, capsys):
    (tmp_path / "config.json").write_bytes((model_dir / "config.json").read_bytes())
    assert main(["plan", "--model", str(tmp_path), "--mesh", "data=1", "--batch-size", "1", "--max-len", "16"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--mesh", "data=two"], "bad mesh 'data=two'"),
    (["--mesh", "rows=2"], "bad mesh axis 'rows'"),
    (["--batch-size", "0"], "batch size must be a positive integer, got 0"),
    (["--prompt-len", "65"], "prompt length must be in [1, max length = 64], got 65"),
])
def test_plan_bad_input(model_dir, capsys, argv, message):
    base = {"--mesh": "data=1", "--batch-size": "2", "--max-len": "64"}
    flags = dict(zip(argv[::2], argv[1::2]))
    args = ["plan", "--model", str(model_dir)] + [x for k, v in {**base, **flags}.items() for x in (k, v)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxspec: error: ") and message in err and "\n" not in err


def test_plan_refuses_an_encoder_decoder_model(tmp_path):
    from tests.hf_seq2seq_factory import FAMILIES, make_t5

    make_t5(sorted(FAMILIES)[0], tmp_path)
    with pytest.raises(InputError, match="covers decoder-only models"):
        plan_memory(load(tmp_path).model, "data=1", 1, 16)


@pytest.mark.parametrize("kind", ["block", "hat"])
def test_two_level_plan_counts_its_params_and_nested_caches_exactly(kind):
    from tests.block_factory import tiny_block
    from tests.hat_factory import tiny_hat

    model, params, _ = tiny_block() if kind == "block" else tiny_hat()
    plan = plan_memory(model, "data=1", 3, 64)
    assert plan.params == sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
    cache = model.init_cache(3, 64)
    assert plan.kv_cache == sum(x.nbytes for x in jax.tree_util.tree_leaves(cache))
    assert plan.decode_activations > 0 and plan.train_activations > 0
