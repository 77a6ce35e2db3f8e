"""Training Block Transformers: from scratch (`lm --arch block`), exact resume after SIGKILL, and uptraining
from a trained vanilla model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.generate import generate
from jaxspec.loading import load
from train.cli import main
from train.metrics import read_metrics

from tests.test_train_data import REPO, SCHEDULE, TINY_MODEL, assert_killed_run_resumes_exactly, one_error_line

BLOCK = ["--arch", "block", "--block-len", "4"]


def _lm(data: Path, run: Path, *extra: str) -> list[str]:
    return ["lm", "--data", str(data), "--out", str(run), *BLOCK, *SCHEDULE, "--lr", "1e-2", *extra]


def _eval_ce(run: Path) -> float:
    return [r for r in read_metrics(run / "metrics.jsonl") if "eval_ce" in r][-1]["eval_ce"]


def _argv(data: Path, run: Path) -> list[str]:
    return _lm(data, run, *TINY_MODEL, "--steps", "30", "--save-every", "10", "--eval-every", "15")


CLI = [sys.executable, "-m", "train"]


@pytest.fixture(scope="module")
def reference(data_dir, env, tmp_path_factory) -> Path:
    """An uninterrupted 30-step run."""
    run = tmp_path_factory.mktemp("block") / "reference"
    proc = subprocess.run(CLI + _argv(data_dir, run), cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return run


def test_block_transformer_trains_exports_and_decodes(reference, capsys):
    records = read_metrics(reference / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.6 * losses[0]
    evals = [r["eval_ce"] for r in records if "eval_ce" in r]
    assert evals[1] < evals[0]
    hf = reference / "hf"
    lm = load(hf)
    assert json.loads((hf / "config.json").read_text())["block_length"] == 4
    prompt = lm.tokenizer.encode("def main(")
    gen = generate(lm.model, lm.params, [prompt], max_new_tokens=9)[0]
    argmax = jnp.argmax(lm.model.sequence_logits(lm.params, jnp.asarray([prompt + gen.output_ids])), axis=-1)[0]
    assert gen.output_ids == np.asarray(argmax[len(prompt) - 1 : -1]).tolist()

    from jaxspec.cli import main as jaxspec_main

    assert jaxspec_main(["generate", "--model", str(hf), "--prompt", "def main(", "--max-new-tokens", "6",
                         "--temperature", "0.8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["new_tokens"] == 6
    assert jaxspec_main(["generate", "--model", str(hf), "--prompt", "x", "--method", "prompt-lookup"]) == 2
    assert "only the autoregressive method runs it" in one_error_line(capsys.readouterr().err)


def test_killed_block_run_resumes_exactly(data_dir, reference, env, tmp_path):
    run = tmp_path / "killed"
    assert_killed_run_resumes_exactly(_argv(data_dir, run), run, reference, env)


def test_uptraining_starts_from_the_vanilla_weights_and_beats_training_from_scratch(data_dir, target_dir, tmp_path):
    up, scratch = tmp_path / "up", tmp_path / "scratch"
    assert main(_lm(data_dir, up, "--uptrain", str(target_dir), "--steps", "1", "--warmup", "0", "--lr", "0")) == 0
    vanilla, block = load(target_dir), load(up / "hf")
    v, b = vanilla.params, block.params
    c = vanilla.model.config
    split = c.num_layers // 2
    same = [(b["embedder"]["embedding"], v["embed_tokens"]["embedding"]),
            (b["embed_tokens"]["embedding"], v["embed_tokens"]["embedding"])]
    same += [(b["block_decoder"][f"layers_{i}"], v[f"layers_{i}"]) for i in range(split)]
    same += [(b["token_decoder"][f"layers_{i - split}"], v[f"layers_{i}"]) for i in range(split, c.num_layers)]
    same += [(b["block_decoder"]["norm"], v["norm"]), (b["token_decoder"]["norm"], v["norm"]), (b["lm_head"], v["lm_head"])]
    for got, want in same:
        jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)

    steps = ["--steps", "20", "--eval-every", "20"]
    up = tmp_path / "up20"
    assert main(_lm(data_dir, up, "--uptrain", str(target_dir), *steps)) == 0
    assert main(_lm(data_dir, scratch, *TINY_MODEL, *steps)) == 0
    assert _eval_ce(up) < 0.7 * _eval_ce(scratch)


def test_bad_block_training_inputs_are_one_line(data_dir, target_dir, tmp_path, capsys):
    assert main(_lm(data_dir, tmp_path / "a", *TINY_MODEL, "--block-len", "3", "--steps", "1", "--warmup", "0")) == 2
    assert "block_length 3 does not divide max_position_embeddings 2048" in one_error_line(capsys.readouterr().err)
    t5 = tmp_path / "t5"
    from tests.hf_seq2seq_factory import make_t5

    make_t5("t5_v1_1", t5)
    capsys.readouterr()  # the factory's progress bars
    assert main(_lm(data_dir, tmp_path / "b", "--uptrain", str(t5), "--steps", "1", "--warmup", "0")) == 2
    assert "uptraining splits a decoder-only model's layers, but this is a T5ForConditionalGeneration" in one_error_line(
        capsys.readouterr().err
    )
    argv = ["lm", "--data", str(data_dir), "--out", str(tmp_path / "c"), "--uptrain", str(target_dir)]
    assert main([*argv, "--steps", "1", "--warmup", "0"]) == 2
    assert "--uptrain builds a Block Transformer: give --arch block" in one_error_line(capsys.readouterr().err)
    assert main(_lm(data_dir, tmp_path / "d", "--uptrain", str(target_dir), "--split", "5", "--steps", "1", "--warmup", "0")) == 2
    assert "--split must leave layers to both decoders" in one_error_line(capsys.readouterr().err)
