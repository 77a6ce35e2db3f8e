"""`jaxspec-train early-exit` and `jaxspec generate --method early-exit`: training raises the adapter's
agreement with the target above plain early exit's, the exported adapter loads and drafts exactly, bad
input is one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxspec import load
from jaxspec.cli import main as cli_main
from jaxspec.heads_io import load_heads
from train.cli import main
from train.metrics import read_metrics

from tests.test_train_data import SCHEDULE, one_error_line


@pytest.fixture(scope="module")
def adapter_run(data_dir, target_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("adapter") / "run"
    argv = ["early-exit", "--model", str(target_dir), "--data", str(data_dir), "--out", str(run), "--exit-layer", "1",
            *SCHEDULE, "--lr", "1e-2", "--steps", "40", "--eval-every", "20"]
    assert main(argv) == 0
    return run


def test_training_raises_the_adapters_agreement_and_saves_it(adapter_run, target_dir):
    records = read_metrics(adapter_run / "metrics.jsonl")
    evals = [r for r in records if "eval_loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    # The first step is plain early exit (the untrained adapter adds nothing); on this tiny target its
    # cross-entropy against the full model is 1.36, of which about 0.9 is the target's own entropy.
    assert np.mean(losses[-5:]) < losses[0] - 0.05 and evals[-1]["eval_loss"] < losses[0] - 0.05
    adapter = load_heads(adapter_run / "adapter", load(target_dir).model)
    config = adapter.heads.config
    assert (config.kind, config.exit_layer) == ("kangaroo", 1)
    assert config.accuracy[0][0] == pytest.approx(evals[-1]["eval_acc"])


def test_cli_drafts_exactly_through_the_adapter_and_rejects_bad_input(
    capsys, adapter_run, heads_run, target_dir, data_dir, tmp_path
):
    base = ["generate", "--model", str(target_dir), "--prompt-ids", "5,6,7,8,5,6", "--max-new-tokens", "12", "--json"]
    assert cli_main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    for extra in (["--adapter", str(adapter_run / "adapter")], ["--exit-layer", "1"]):
        assert cli_main(base + ["--method", "early-exit", *extra]) == 0
        assert json.loads(capsys.readouterr().out)["output_ids"] == plain["output_ids"]

    bad = [
        (["--method", "early-exit"], "needs an exit adapter"),
        (["--method", "early-exit", "--exit-layer", "2"], "exit layer must be in [1, 2)"),
        (["--method", "early-exit", "--adapter", str(heads_run / "heads")], "not an exit adapter"),
        (["--method", "early-exit", "--adapter", str(adapter_run / "adapter"), "--exit-layer", "2"], "not --exit-layer 2"),
        (["--method", "medusa", "--heads", str(adapter_run / "adapter")], "an exit adapter, not draft heads"),
    ]
    for extra, words in bad:
        assert cli_main(base + extra) == 2
        assert words in one_error_line(capsys.readouterr().err)
    argv = ["early-exit", "--model", str(target_dir), "--data", str(data_dir), "--out", str(tmp_path / "r"),
            "--exit-layer", "0", "--steps", "1"]
    assert main(argv) == 2
    assert "exit layer must be in [1, 2)" in one_error_line(capsys.readouterr().err)
