"""The trainer: LM loss goes down, distillation raises agreement, accumulation equals a big batch, bf16, z-loss, export."""

from __future__ import annotations

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspec.loading import load
from models import CausalLM, from_hf_config
from train.cli import main
from train.dataset import open_dataset
from train.metrics import read_metrics
from train.model_config import llama_config
from train.objectives import lm_loss
from train.step import init_state, lm_objective, make_train_step

from tests.test_train_data import TINY_MODEL, TINY_VOCAB, one_error_line
from tests.tokenizer_factory import write_tokenizer

SCHEDULE = ["--warmup", "4", "--lr", "1e-2", "--batch-size", "8", "--eval-batches", "4", "--save-every", "1000"]
DRAFT = ["--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--intermediate", "64", "--tie-embeddings"]


def _tiny_model(dtype: str = "float32") -> CausalLM:
    cfg = llama_config(32, 2, 4, 2, 64, 64)
    cfg["vocab_size"] = TINY_VOCAB
    return CausalLM(from_hf_config(cfg), dtype)


@pytest.fixture(scope="module")
def one_step(data_dir):
    """one_step(dtype, accum): one SGD step (learning rate 1) on the first 8 training rows, cached per arguments.

    With SGD the params move by exactly minus the gradient. Adam would not do
    here: its first step is about lr·sign(g), which turns float summation-order
    noise in near-zero gradients into lr-sized changes.
    """
    rows = jnp.asarray(open_dataset(data_dir).train[:8].astype(np.int32))

    @functools.cache
    def run(dtype: str, accum: int):
        model = _tiny_model(dtype)
        step = make_train_step(lm_objective(model, 0.0), optax.sgd(1.0), optax.constant_schedule(1.0))
        state = init_state(model.init_params(jax.random.PRNGKey(0)), optax.sgd(1.0), jax.random.PRNGKey(1))
        return step(state, rows.reshape(accum, rows.shape[0] // accum, -1), None)

    return run


@pytest.fixture(scope="module")
def lm_run(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("lm") / "run"
    argv = ["lm", "--data", str(data_dir), "--out", str(run), *TINY_MODEL, *SCHEDULE, "--steps", "40", "--eval-every", "20"]
    assert main(argv) == 0
    return run


def test_training_lowers_the_loss_and_exports_a_loadable_model(data_dir, lm_run, capsys):
    records = read_metrics(lm_run / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_ce"] for r in records if "eval_ce" in r]
    assert len(losses) == 40 and len(evals) == 2
    assert np.mean(losses[-5:]) < losses[0] - 1.5
    assert all(r["tokens_per_s"] > 0 for r in records if "loss" in r)

    loaded = load(lm_run / "hf")
    assert json.loads((lm_run / "hf" / "generation_config.json").read_text())["eos_token_id"] == 2
    assert loaded.tokenizer is not None and loaded.eos_ids == (2,)
    # The exported model scores the held-out batches exactly as the trainer's last evaluation did.
    capsys.readouterr()
    assert main(["eval", "--model", str(lm_run / "hf"), "--data", str(data_dir), "--batch-size", "8", "--batches", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["eval_ce"] == pytest.approx(evals[-1], rel=1e-6)


def test_distillation_lowers_kl_and_raises_agreement(data_dir, lm_run, tmp_path, capsys):
    teacher = lm_run / "hf"
    argv = ["distill", "--teacher", str(teacher), "--data", str(data_dir), "--out", str(tmp_path / "draft"), *DRAFT,
            *SCHEDULE, "--steps", "60", "--eval-every", "10", "--kl-weight", "0.8"]
    assert main(argv) == 0
    records = read_metrics(tmp_path / "draft" / "metrics.jsonl")
    train = [r for r in records if "kl" in r]
    evals = [r for r in records if "eval_kl" in r]
    assert np.mean([r["kl"] for r in train[-5:]]) < 0.5 * train[0]["kl"]
    assert evals[-1]["eval_kl"] < evals[0]["eval_kl"]
    assert evals[-1]["eval_agreement"] > evals[0]["eval_agreement"] + 0.1
    assert evals[-1]["eval_agreement"] > 0.5

    # A teacher whose tokenizer differs from the data's cannot be distilled from.
    other = tmp_path / "other_teacher"
    shutil.copytree(teacher, other)
    write_tokenizer(other, 280)
    argv[argv.index("--teacher") + 1] = str(other)
    argv[argv.index("--out") + 1] = str(tmp_path / "other")
    capsys.readouterr()
    assert main(argv) == 2
    assert "tokenizer differs" in one_error_line(capsys.readouterr().err)


def test_unloadable_teacher_is_one_clear_error(data_dir, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    argv = ["distill", "--teacher", str(teacher), "--data", str(data_dir), "--out", str(tmp_path / "d"), *DRAFT]
    assert main(argv) == 2
    assert "config.json" in one_error_line(capsys.readouterr().err)


def test_accumulating_two_micro_batches_equals_one_double_batch(one_step):
    big, m_big = one_step("float32", accum=1)
    acc, m_acc = one_step("float32", accum=2)
    assert float(m_acc["loss"]) == pytest.approx(float(m_big["loss"]), rel=1e-6)
    assert float(m_acc["grad_norm"]) == pytest.approx(float(m_big["grad_norm"]), rel=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(acc["params"]), jax.tree_util.tree_leaves(big["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bfloat16_compute_keeps_float32_master_params(one_step):
    _, m32 = one_step("float32", accum=1)
    state16, m16 = one_step("bfloat16", accum=1)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state16["params"])} == {jnp.dtype("float32")}
    assert float(m16["loss"]) == pytest.approx(float(m32["loss"]), abs=0.05)


def test_z_loss_adds_the_squared_log_partition():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 7)) * 3 + 2
    targets = jnp.array([[0, 1, 2], [3, 4, 5]])
    plain, m = lm_loss(logits, targets, 0.0)
    with_z, _ = lm_loss(logits, targets, 1e-2)
    log_z = jax.nn.logsumexp(logits, -1)
    assert float(with_z - plain) == pytest.approx(1e-2 * float(jnp.mean(log_z**2)), rel=1e-5)
    assert float(m["ce"]) == pytest.approx(float(-jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))), rel=1e-6)


def test_plot_draws_the_loss_curves(lm_run, tmp_path):
    out = tmp_path / "img" / "loss.png"
    assert main(["plot", f"{lm_run / 'metrics.jsonl'}=tiny", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
