"""Corpus, tokenizer, packed data and the resumable batch stream; also the helpers other train tests use."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from train.bpe import BOS_ID, EOS_ID, load_tokenizer, train_bpe
from train.cli import main
from train.corpus import find_corpus, read_text
from train.dataset import BatchStream, eval_batches, open_dataset
from train.errors import TrainingError

TINY_VOCAB = 300
TINY_SEQ = 32
# hidden 32, 2 layers: compiles and steps in milliseconds.
TINY_MODEL = ["--hidden", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2", "--intermediate", "64"]
# A short schedule for tiny runs on a frozen target (heads, exit adapters).
SCHEDULE = ["--warmup", "4", "--batch-size", "8", "--eval-batches", "4", "--save-every", "1000"]
REPO = Path(__file__).resolve().parents[1]


def write_corpus(root: Path, files: int = 40) -> Path:
    """Deterministic, very regular Python-like files: a tiny model learns them within a few dozen steps."""
    rng = random.Random(0)
    names = ["alpha", "beta", "gamma", "delta", "value", "count", "total", "item"]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        lines = []
        for j in range(12):
            f, a, b = rng.sample(names, 3)
            op = rng.choice("+-*")
            lines.append(f"def {f}_{j}({a}, {b}):\n    return {a} {op} {b}\n\n")
        (root / f"mod_{i:02d}.py").write_text("".join(lines))
    return root


def make_dataset(tmp: Path) -> Path:
    """tmp/corpus → tmp/tok → tmp/data through the CLI, as a user would; returns the data directory."""
    corpus = write_corpus(tmp / "corpus")
    common = ["--corpus", str(corpus), "--eval-fraction", "0.2"]
    assert main(["tokenizer", *common, "--vocab-size", str(TINY_VOCAB), "--out", str(tmp / "tok")]) == 0
    assert main(["data", *common, "--tokenizer", str(tmp / "tok"), "--seq-len", str(TINY_SEQ), "--out", str(tmp / "data")]) == 0
    return tmp / "data"


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_split_is_deterministic_and_disjoint(tmp_path):
    root = write_corpus(tmp_path / "c")
    a, b = find_corpus(str(root), eval_fraction=0.2), find_corpus(str(root), eval_fraction=0.2)
    assert a == b
    assert a.eval_files and not set(a.train_files) & set(a.eval_files)
    assert list(a.train_files) == sorted(a.train_files)


def test_stdlib_corpus_leaves_out_installed_packages():
    corpus = find_corpus("stdlib")
    assert len(corpus.train_files) > 500 and len(corpus.eval_files) > 10
    assert not any("site-packages" in p.relative_to(corpus.root).parts for p in corpus.train_files + corpus.eval_files)


def test_tokenizer_is_deterministic_and_round_trips(data_dir):
    corpus = find_corpus(str(data_dir.parent / "corpus"), eval_fraction=0.2)
    tok = load_tokenizer(data_dir)
    again = train_bpe((read_text(f) for f in corpus.train_files), TINY_VOCAB)
    assert again.to_str() == tok.to_str()
    assert tok.get_vocab_size() == TINY_VOCAB
    assert [tok.token_to_id(t) for t in ("<pad>", "<s>", "</s>")] == [0, 1, 2]
    text = "def f(x):\n    return x ** 2  # ünïcode ✓\n"
    ids = tok.encode(text).ids
    assert ids[0] == BOS_ID  # a prompt starts like a packed file
    assert tok.decode(ids) == text


def test_rows_are_the_packed_token_stream(data_dir):
    data = open_dataset(data_dir)
    meta = json.loads((data_dir / "dataset.json").read_text())
    assert data.train.shape == (meta["splits"]["train"]["rows"], TINY_SEQ + 1)
    assert data.train.dtype == np.uint16 and len(data.eval) > 0
    corpus = find_corpus(str(data_dir.parent / "corpus"), eval_fraction=0.2)
    tok = load_tokenizer(data_dir)
    first = [BOS_ID, *tok.encode(read_text(corpus.train_files[0]), add_special_tokens=False).ids, EOS_ID]
    stream = np.asarray(data.train).ravel()
    np.testing.assert_array_equal(stream[: len(first)], first)


def _gemma_style_tokenizer(path: Path, specials=("<pad>", "<eos>", "<bos>")) -> Path:
    """A word-level tokenizer whose special tokens sit where Gemma's do: pad 0, eos 1, bos 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {name: i for i, name in enumerate(specials)}
    vocab.update({w: len(vocab) + i for i, w in enumerate(["[UNK]", "def", "return", "x", "=", "(", ")", ":"])})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path.mkdir(parents=True)
    tok.save(str(path / "tokenizer.json"))
    return path


def test_a_foreign_tokenizer_packs_with_its_own_special_ids(tmp_path, capsys):
    """Heads and exit adapters train on a frozen target's own tokenization, e.g. Gemma's."""
    corpus = write_corpus(tmp_path / "corpus", files=6)
    tok = _gemma_style_tokenizer(tmp_path / "tok")
    assert main(["data", "--corpus", str(corpus), "--tokenizer", str(tok), "--seq-len", "16", "--out", str(tmp_path / "d")]) == 0
    data = open_dataset(tmp_path / "d")
    assert data.special_ids == (2, 1, 0)  # bos, eos, pad
    assert data.train[0, 0] == 2 and 1 in data.train
    capsys.readouterr()
    bare = _gemma_style_tokenizer(tmp_path / "bare", specials=("<pad>", "<end>", "<start>"))
    assert main(["data", "--corpus", str(corpus), "--tokenizer", str(bare), "--seq-len", "16", "--out", str(tmp_path / "e")]) == 2
    assert "no begin/end-of-text tokens" in one_error_line(capsys.readouterr().err)


def test_batch_stream_resumes_from_its_position():
    rows = np.arange(10)[:, None] * np.ones((1, 3), np.uint16)
    full = BatchStream(rows, batch_rows=4, seed=7)
    batches = [full.next()[:, 0] for _ in range(6)]  # 24 rows: crosses two epoch boundaries
    for epoch in range(2):
        assert sorted(np.concatenate(batches)[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    resumed = BatchStream(rows, batch_rows=4, seed=7, position=8)
    np.testing.assert_array_equal(resumed.next()[:, 0], batches[2])
    assert resumed.position == 12
    assert [b[0, 0] for b in eval_batches(rows, 4, 5)] == [0, 4]


def test_missing_and_truncated_data_files_name_the_path(data_dir, tmp_path):
    with pytest.raises(TrainingError, match=str(tmp_path / "nope")):
        open_dataset(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in data_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "train.bin").write_bytes((data_dir / "train.bin").read_bytes()[:100])
    with pytest.raises(TrainingError, match="train.bin: expected"):
        open_dataset(broken)
    (broken / "train.bin").unlink()
    with pytest.raises(TrainingError, match="train.bin: missing data file"):
        open_dataset(broken)


def test_cli_user_errors_are_one_line_and_exit_2(data_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["tokenizer", "--corpus", str(empty), "--out", str(tmp_path / "t")]) == 2
    assert "no files matching" in one_error_line(capsys.readouterr().err)
    argv = ["lm", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"), *TINY_MODEL]
    assert main(argv) == 2
    assert str(tmp_path / "missing") in one_error_line(capsys.readouterr().err)
    argv = ["lm", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--batch-size", "3", "--accum", "2"]
    assert main(argv) == 2
    assert "multiple of accum" in one_error_line(capsys.readouterr().err)
    # The console entry point itself: argparse errors and TrainingErrors alike are one line, exit 2.
    for argv in (["lm", "--data"], ["data", "--tokenizer", str(tmp_path / "no.json"), "--out", str(tmp_path / "d")]):
        proc = subprocess.run([sys.executable, "-m", "train", *argv], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2
        one_error_line(proc.stderr)


@pytest.mark.parametrize("command", ["tokenizer", "data", "lm", "distill", "eval", "plot"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"jaxspec-train {command}" in capsys.readouterr().out


def assert_killed_run_resumes_exactly(argv: list[str], run: Path, reference: Path, env: dict) -> None:
    """`python -m train ARGV` (writing to `run`) SIGKILLed once its step-10 checkpoint exists, then rerun:
    it resumes, and its metrics (timings aside) and exported weights equal the uninterrupted `reference`'s."""
    import signal
    import subprocess
    import sys
    import time

    from train.metrics import read_metrics

    cli = [sys.executable, "-m", "train", *argv]
    proc = subprocess.Popen(cli, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not (run / "checkpoints" / "10").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (run / "hf").exists()
    resumed = subprocess.run(cli, cwd=REPO, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "from the checkpoint of step" in resumed.stderr

    def numbers(path):
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(path / "metrics.jsonl")]

    assert numbers(run) == numbers(reference)
    assert (run / "hf" / "model.safetensors").read_bytes() == (reference / "hf" / "model.safetensors").read_bytes()
