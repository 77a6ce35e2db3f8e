"""Training HATs: byte datasets (`data --bytes`), `lm --arch hat` from scratch, exact resume after SIGKILL,
and the bad inputs of both."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.generate import generate
from jaxspec.loading import load
from models.hat_words import EOS
from train.cli import main
from train.dataset import open_dataset
from train.metrics import read_metrics

from tests.test_train_data import REPO, SCHEDULE, TINY_MODEL, assert_killed_run_resumes_exactly, one_error_line, write_corpus

HAT = ["--arch", "hat", "--byte-hidden", "32", "--byte-intermediate", "64", "--sliding-window", "32",
       "--max-positions", "256", "--max-word-bytes", "12"]
CLI = [sys.executable, "-m", "train"]


def _argv(data: Path, run: Path) -> list[str]:
    return ["lm", "--data", str(data), "--out", str(run), *HAT, *TINY_MODEL, *SCHEDULE, "--lr", "1e-2",
            "--steps", "30", "--save-every", "10", "--eval-every", "15"]


@pytest.fixture(scope="module")
def byte_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hat_data")
    out = root / "bytes"
    assert main(["data", "--corpus", str(write_corpus(root / "corpus")), "--bytes", "--seq-len", "128", "--eval-fraction", "0.1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def reference(byte_data, env, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hat") / "reference"
    proc = subprocess.run(CLI + _argv(byte_data, run), cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return run


def test_byte_dataset_holds_the_files_bytes_and_end_of_text(byte_data):
    data = open_dataset(byte_data)
    assert data.is_bytes and data.vocab_size == 257 and data.tokenizer_file is None
    assert not (byte_data / "tokenizer.json").exists()
    stream = np.asarray(data.train).reshape(-1)
    ends = np.flatnonzero(stream == EOS)
    assert stream.max() == EOS and len(ends) >= data.meta["splits"]["train"]["files"] - 1  # one per file
    first = bytes(stream[: ends[0]].astype(np.uint8))
    assert first.decode("utf-8").startswith(("def ", "class ", "import ", "#"))  # a file's bytes, as they were


def test_hat_trains_exports_and_decodes_text(reference, capsys):
    records = read_metrics(reference / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.6 * losses[0]
    evals = [r["eval_ce"] for r in records if "eval_ce" in r]
    assert evals[1] < evals[0]
    hf = reference / "hf"
    assert sorted(p.name for p in hf.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    lm = load(hf)
    prompt = list(b"def main(")
    gen = generate(lm.model, lm.params, [prompt], max_new_tokens=12)[0]
    argmax = jnp.argmax(lm.model.sequence_logits(lm.params, jnp.asarray([prompt + gen.output_ids])), axis=-1)[0]
    assert gen.output_ids == np.asarray(argmax[len(prompt) - 1 : -1]).tolist()

    from jaxspec.cli import main as jaxspec_main

    assert jaxspec_main(["generate", "--model", str(hf), "--prompt", "def main(", "--max-new-tokens", "8",
                         "--temperature", "0.8", "--top-p", "0.9", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["prompt_ids"] == prompt and isinstance(row["text"], str)


def test_killed_hat_run_resumes_exactly(byte_data, reference, env, tmp_path):
    run = tmp_path / "killed"
    assert_killed_run_resumes_exactly(_argv(byte_data, run), run, reference, env)


def test_bad_hat_training_inputs_are_one_line(byte_data, data_dir, tmp_path, capsys):
    assert main(["lm", "--data", str(data_dir), "--out", str(tmp_path / "a"), *HAT, "--steps", "1"]) == 2
    assert "a HAT trains on a byte dataset" in one_error_line(capsys.readouterr().err)
    assert main(["lm", "--data", str(byte_data), "--out", str(tmp_path / "b"), *TINY_MODEL, "--steps", "1"]) == 2
    assert "a HAT trains on a byte dataset" in one_error_line(capsys.readouterr().err)
    assert main(["data", "--corpus", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "give --tokenizer, or --bytes" in one_error_line(capsys.readouterr().err)
    assert main(["lm", "--data", str(byte_data), "--out", str(tmp_path / "d"), *HAT, "--byte-hidden", "30", "--steps", "1"]) == 2
    assert "connector_heads 4 must divide the encoder's hidden_size 30" in one_error_line(capsys.readouterr().err)
