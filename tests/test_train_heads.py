"""`jaxspec-train heads` and `jaxspec generate --method medusa`: training raises the heads' accuracy, the
exported directory loads and drafts, greedy output stays exact, bad heads are one clear line."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import load
from jaxspec.generate import generate
from jaxspec.cli import main as cli_main
from jaxspec.heads_io import load_heads, target_fields
from jaxspec.methods import build_drafter
from jaxspec.sampling import SamplingConfig
from models.medusa import HeadsConfig
from train.cli import main
from train.dataset import open_dataset
from train.heads import HeadsObjective, most_frequent_ids
from train.metrics import read_metrics

from tests.test_train_data import SCHEDULE, one_error_line

def test_training_raises_head_accuracy_and_saves_it(heads_run, target_dir):
    records = read_metrics(heads_run / "metrics.jsonl")
    evals = [r for r in records if "eval_loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(evals) == 2 and np.mean(losses[-5:]) < losses[0] - 0.5
    heads = load_heads(heads_run / "heads", load(target_dir).model)
    config = heads.heads.config
    assert (config.num_heads, config.draft_vocab) == (2, None)
    assert config.accuracy[0][0] == pytest.approx(evals[-1]["eval_acc_0_0"])
    assert config.accuracy[0][0] > 0.2 and config.accuracy[0][0] > config.accuracy[0][1]


def assert_heads_draft_exactly(method, heads_dir, target_dir, data_dir):
    """Trained heads decode held-out rows into the target's own greedy text, more than 1.2 tokens per call."""
    target = load(target_dir)
    heads = load_heads(heads_dir, target.model)
    rows = open_dataset(data_dir).eval[:4, :12].astype(int).tolist()
    plain = generate(target.model, target.params, rows, max_new_tokens=24)
    drafter, dparams = build_drafter(method, batch=4, sampling=SamplingConfig(), target_vocab=target.model.vocab_size,
                                     heads=heads, target=(target.model, target.params), tree_size=6)
    out = generate(target.model, target.params, rows, max_new_tokens=24, drafter=drafter, drafter_params=dparams)
    assert [g.output_ids for g in out] == [g.output_ids for g in plain]
    assert sum(len(g.output_ids) for g in out) / sum(g.target_calls for g in out) > 1.2


def test_trained_heads_draft_exactly_and_accept_more_than_one_token(heads_run, target_dir, data_dir):
    assert_heads_draft_exactly("medusa", heads_run / "heads", target_dir, data_dir)


def test_a_draft_vocabulary_keeps_the_most_frequent_ids(data_dir, target_dir, tmp_path):
    argv = ["heads", "--model", str(target_dir), "--data", str(data_dir), "--out", str(tmp_path / "run"),
            "--num-heads", "1", "--draft-vocab", "40", *SCHEDULE, "--steps", "6"]
    assert main(argv) == 0
    heads = load_heads(tmp_path / "run" / "heads", load(target_dir).model)
    want = most_frequent_ids(open_dataset(data_dir).train, 40, heads.heads.config.vocab_size)
    assert heads.heads.config.draft_vocab == 40 and tuple(np.asarray(heads.draft_ids).tolist()) == want


class _SlicedTeacher:
    """The target scoring all its rows, the logits cut to the subset afterwards (the objective's old way)."""

    def __init__(self, model):
        self.model = model

    def forward(self, params, tokens, positions, cache, vocab=None):
        out = self.model.forward(params, tokens, positions, cache)
        return out if vocab is None else out._replace(logits=out.logits[..., vocab[0]])

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_a_draft_vocabulary_scores_only_its_rows_of_the_teacher(data_dir, target_dir):
    """The target scores only the draft vocabulary's rows of its head; loss and metrics equal those of
    its full logits restricted afterwards."""
    target = load(target_dir, dtype="float32")
    ids = most_frequent_ids(open_dataset(data_dir).train, 40, target.model.vocab_size)
    config = HeadsConfig(kind="medusa", num_heads=2, num_layers=1, draft_vocab=40, **target_fields(target.model))
    objective = HeadsObjective(config, str(target_dir), ids)
    params = objective.init_params(jax.random.key(0))
    rows = jnp.asarray(open_dataset(data_dir).train[:2, :17].astype(np.int32))
    restricted = objective.loss_fn(target.model, 1e-4)(params, rows, None, target.params)
    sliced = objective.loss_fn(_SlicedTeacher(target.model), 1e-4)(params, rows, None, target.params)
    np.testing.assert_allclose(restricted[0], sliced[0], rtol=1e-5)
    for name, value in sliced[1].items():
        np.testing.assert_allclose(restricted[1][name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_most_frequent_ids_breaks_ties_by_id():
    rows = np.array([[5, 5, 2, 2, 7, 9]])
    assert most_frequent_ids(rows, 3, 10) == (2, 5, 7)


def test_cli_generates_with_heads_and_rejects_bad_ones(capsys, heads_run, target_dir, tmp_path):
    base = ["generate", "--model", str(target_dir), "--prompt-ids", "5,6,7,8", "--max-new-tokens", "8", "--json"]
    assert cli_main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli_main(base + ["--method", "medusa", "--heads", str(heads_run / "heads"), "--tree-size", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["output_ids"] == plain["output_ids"]

    assert cli_main(base + ["--method", "medusa"]) == 2
    assert "needs draft heads" in one_error_line(capsys.readouterr().err)
    assert cli_main(base + ["--method", "medusa", "--heads", str(tmp_path / "nowhere")]) == 2
    assert "no such heads directory" in one_error_line(capsys.readouterr().err)
    config = json.loads((heads_run / "heads" / "config.json").read_text())
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "heads.safetensors").write_bytes((heads_run / "heads" / "heads.safetensors").read_bytes())
    for field, value, words in (("vocab_size", 999, "vocab size 999"), ("target_layers", 7, "target layers 7")):
        (wrong / "config.json").write_text(json.dumps({**config, field: value}))
        assert cli_main(base + ["--method", "medusa", "--heads", str(wrong)]) == 2
        assert words in one_error_line(capsys.readouterr().err)
    assert cli_main(base + ["--method", "medusa", "--heads", str(heads_run / "heads"), "--tree-size", "0"]) == 2
    assert "tree size" in one_error_line(capsys.readouterr().err)


def test_hydra_heads_with_prefix_attention_train_and_draft_exactly(capsys, data_dir, target_dir, tmp_path):
    """`--kind hydra --prefix-attention` (Hydra++) trains, exports heads with the prefix layer, and drafts the
    target's own greedy text; a heads directory of one kind refuses the other method in one line."""
    run = tmp_path / "hydra"
    argv = ["heads", "--kind", "hydra", "--prefix-attention", "--model", str(target_dir), "--data", str(data_dir),
            "--out", str(run), "--num-heads", "2", "--num-layers", "2", *SCHEDULE, "--lr", "1e-2", "--steps", "40"]
    assert main(argv) == 0
    capsys.readouterr()
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert np.mean(losses[-5:]) < losses[0] - 0.5
    heads = load_heads(run / "heads", load(target_dir).model)
    assert heads.heads.config.kind == "hydra" and heads.heads.prefix is not None
    assert heads.heads.config.accuracy[0][0] > 0.2
    assert_heads_draft_exactly("hydra", run / "heads", target_dir, data_dir)

    base = ["generate", "--model", str(target_dir), "--prompt-ids", "5,6,7,8", "--max-new-tokens", "4"]
    assert cli_main(base + ["--method", "medusa", "--heads", str(run / "heads")]) == 2
    assert "hydra heads, not medusa heads" in one_error_line(capsys.readouterr().err)
    assert main(argv[:1] + ["--kind", "medusa"] + argv[3:]) == 2
    assert "needs --kind hydra" in one_error_line(capsys.readouterr().err)


def test_an_eagle_drafter_trains_and_drafts_exactly(capsys, data_dir, target_dir, tmp_path):
    """`--kind eagle` trains the one-layer drafter through its unrolled steps, exports it, and its dynamic
    tree decodes the target's own greedy text; a ResBlock count is refused in one line."""
    run = tmp_path / "eagle"
    argv = ["heads", "--kind", "eagle", "--model", str(target_dir), "--data", str(data_dir), "--out", str(run),
            "--num-heads", "2", *SCHEDULE, "--lr", "1e-2", "--steps", "40"]
    assert main(argv) == 0
    capsys.readouterr()
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert np.mean(losses[-5:]) < losses[0] - 0.5
    heads = load_heads(run / "heads", load(target_dir).model)
    assert heads.heads.config.kind == "eagle" and heads.heads.config.attention_heads
    assert heads.heads.config.accuracy[0][0] > 0.2
    assert_heads_draft_exactly("eagle", run / "heads", target_dir, data_dir)
    assert main(argv + ["--num-layers", "2"]) == 2
    assert "an eagle drafter is one layer" in one_error_line(capsys.readouterr().err)
