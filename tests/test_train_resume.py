"""Exact resume after SIGKILL, a kill in the middle of a save, and a corrupt checkpoint."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.cli import main
from train.metrics import read_metrics

from tests.test_train_data import REPO, TINY_MODEL, one_error_line

STEPS = 240
SAVE_EVERY = 20
TMP_MARK = ".orbax-checkpoint-tmp"


def _argv(data: Path, run: Path) -> list[str]:
    return ["lm", "--data", str(data), "--out", str(run), *TINY_MODEL, "--steps", str(STEPS), "--warmup", "10",
            "--lr", "1e-2", "--batch-size", "8", "--accum", "2", "--save-every", str(SAVE_EVERY), "--keep", "2",
            "--eval-every", "100", "--eval-batches", "2"]


def _cli(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "train", *argv]


def _entries(ckpts: Path) -> tuple[list[int], list[str]]:
    """(committed steps, names of saves in progress)."""
    names = [p.name for p in ckpts.iterdir()] if ckpts.exists() else []
    return sorted(int(n) for n in names if n.isdigit()), [n for n in names if TMP_MARK in n]


def _numbers(records: list[dict]) -> list[dict]:
    # Everything but the wall-clock throughput must repeat exactly.
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def _kill_during_a_save(run: Path, argv: list[str], env: dict) -> None:
    """Starts the CLI and SIGKILLs it while it writes a checkpoint, after at least one is committed."""
    proc = subprocess.Popen(_cli(argv), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while True:
            committed, in_progress = _entries(run / "checkpoints")
            if committed and in_progress:
                proc.send_signal(signal.SIGKILL)
                break
            assert proc.poll() is None, "the run ended before a save could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.002)
    finally:
        proc.kill()
        proc.wait()


def _killed_run(data: Path, tmp: Path, env: dict) -> Path:
    """A run killed mid-save. The save seen in progress may just have been committed when the signal
    landed (a window of microseconds against a save's milliseconds); then try again."""
    for attempt in range(3):
        run = tmp / f"run{attempt}"
        _kill_during_a_save(run, _argv(data, run), env)
        if _entries(run / "checkpoints")[1]:
            return run
    pytest.fail("could not kill the run in the middle of a save")


@pytest.fixture(scope="module")
def reference(data_dir, env, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.run(_cli(_argv(data_dir, run)), cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return run


def test_killed_run_resumes_with_exactly_the_losses_of_an_uninterrupted_run(data_dir, reference, env, tmp_path):
    run = _killed_run(data_dir, tmp_path, env)
    argv = _argv(data_dir, run)
    last = max(_entries(run / "checkpoints")[0])
    before = read_metrics(run / "metrics.jsonl")
    assert last < STEPS and max(r["step"] for r in before) >= last

    proc = subprocess.run(_cli(argv), cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"from the checkpoint of step {last}\n" in proc.stderr
    assert not _entries(run / "checkpoints")[1], "the half-written save was not cleaned up"

    got, want = read_metrics(run / "metrics.jsonl"), read_metrics(reference / "metrics.jsonl")
    assert [r["step"] for r in got] == [r["step"] for r in want]
    assert _numbers(got) == _numbers(want)
    kept = [r for r in before if r["step"] <= last]  # written before the kill, never recomputed
    assert got[: len(kept)] == kept
    assert (run / "hf" / "model.safetensors").read_bytes() == (reference / "hf" / "model.safetensors").read_bytes()


def test_resuming_with_different_settings_is_refused(data_dir, reference, capsys):
    argv = _argv(data_dir, reference)
    argv[argv.index("--lr") + 1] = "5e-3"
    assert main(argv) == 2
    assert "different run settings" in one_error_line(capsys.readouterr().err)


def test_corrupt_checkpoint_is_one_clear_error(data_dir, reference, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for f in reference.iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    subprocess.run(["cp", "-r", str(reference / "checkpoints" / str(STEPS)), str(run / "checkpoints")], check=True)
    for f in (run / "checkpoints" / str(STEPS) / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00garbage" * max(1, f.stat().st_size // 8))
    assert main(_argv(data_dir, run)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "corrupted checkpoint" in line and str(run / "checkpoints" / str(STEPS)) in line
