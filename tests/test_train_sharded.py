"""Sharded and multi-process training: the 8-device checks run in their own process, two processes of 4 CPU
devices each train together here, and bad flags are one line.

Tolerance for the two-process run against a one-process, one-device run (float32): the sharded step sums in
another order and the jitted sharded init differs from the eager one by an ulp, so every logged number agrees
to rtol 1e-5 and the exported params to atol 1e-5; a resumed two-process run repeats the uninterrupted
two-process run exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import load_file

from train.cli import main
from train.metrics import read_metrics

from tests.hf_factory import make_hf_model
from tests.test_train_data import REPO, TINY_MODEL, one_error_line
from tests.xla_env import simulated_devices

RTOL = 1e-5
PARAM_ATOL = 1e-5
PROCESS_TIMEOUT_S = 300
MESH = "data=2,tensor=4"


def _cached_compiles(tmp_path: Path) -> dict:
    """An environment whose JAX processes share a fresh persistent compilation cache: runs that compile the
    same program (the CLI after the step-level checks, a resumed run after the first) compile it once."""
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def test_training_on_a_2x4_mesh_of_eight_devices(tmp_path):
    env = simulated_devices(8, _cached_compiles(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/mesh/mesh_train_checks.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout


def _argv(data: Path, run: Path) -> list[str]:
    return ["lm", "--data", str(data), "--out", str(run), *TINY_MODEL, "--steps", "6", "--warmup", "2", "--lr", "1e-2",
            "--batch-size", "8", "--accum", "2", "--save-every", "3", "--eval-every", "3", "--eval-batches", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(command: Callable[[str, int], list[str]], logs: Path, env: dict, returncode: int = 0) -> list[str]:
    """Runs command(coordinator, process_id) as processes 0 and 1 of one job, 4 CPU devices each; returns
    their stdout and stderr."""
    coordinator = f"127.0.0.1:{_free_port()}"
    env = simulated_devices(4, env)
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for pid in range(2):
            with open(logs / f"{pid}.out", "w") as out, open(logs / f"{pid}.err", "w") as err:
                procs.append(subprocess.Popen(command(coordinator, pid), cwd=REPO, env=env, stdout=out, stderr=err))
        codes = [p.wait(timeout=PROCESS_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:  # a failed or timed-out process must not leave its partner waiting forever
            p.kill()
            p.wait()
    outs = [(logs / f"{pid}.{kind}").read_text() for pid in range(2) for kind in ("out", "err")]
    assert codes == [returncode] * 2, "\n".join(o[-3000:] for o in outs)
    return outs


def _cli(argv: list[str], mesh: tuple[str, ...] = ("--mesh", MESH)) -> Callable[[str, int], list[str]]:
    def command(coordinator: str, pid: int) -> list[str]:
        cluster = ["--coordinator", coordinator, "--num-processes", "2", "--process-id", str(pid)]
        return [sys.executable, "-m", "train", *argv, *mesh, *cluster]

    return command


def test_each_process_reads_only_its_rows_of_each_batch(tmp_path):
    def command(coordinator: str, pid: int) -> list[str]:
        return [sys.executable, "-m", "tests.mesh.two_process_batches", coordinator, str(pid)]

    outs = _two_processes(command, tmp_path, dict(os.environ))
    assert outs[0].splitlines()[-1] == "ok" and outs[2].splitlines()[-1] == "ok"


def test_each_process_loads_only_its_shards(tmp_path):
    from jaxspec import load, save
    from tests.gguf_factory import tokenizer_vocab_size, write_gguf_model

    make_hf_model("llama", tmp_path / "model", num_key_value_heads=4)  # 96 ids: the vocabulary splits 4 ways
    save(load(tmp_path / "model"), tmp_path / "orbax")
    hf = make_hf_model("llama", tmp_path / "for_gguf", num_key_value_heads=4, vocab_size=tokenizer_vocab_size())
    write_gguf_model(hf, "llama", tmp_path / "m.gguf", "Q8_0")

    def command(coordinator: str, pid: int) -> list[str]:
        return [sys.executable, "-m", "tests.mesh.two_process_loading", coordinator, str(pid), str(tmp_path / "model"),
                str(tmp_path / "orbax"), str(tmp_path / "m.gguf")]

    outs = _two_processes(command, tmp_path / "logs", dict(os.environ))
    for out in (outs[0], outs[2]):
        word, read, total = out.splitlines()[-1].split()
        # fsdp=2 splits every tensor with an embedding dimension (all of them here, the norms' scales too)
        # between the processes, and tensor=4 splits the rest among each process's devices: half each.
        assert word == "ok" and int(read) <= 0.55 * int(total), out


def _numbers(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(run / "metrics.jsonl")]


def test_two_processes_train_checkpoint_resume_and_agree_with_one_process(data_dir, tmp_path):
    env = _cached_compiles(tmp_path)  # only process 0 writes to it; the resumed pair reads the first pair's programs
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main(_argv(data_dir, reference)) == 0
    want = _numbers(reference)

    _two_processes(_cli(_argv(data_dir, run)), tmp_path / "logs1", env)
    uninterrupted = _numbers(run)
    assert [r["step"] for r in uninterrupted] == [r["step"] for r in want]
    for got, ref in zip(uninterrupted, want):
        assert sorted(got) == sorted(ref) and got == pytest.approx(ref, rel=RTOL)
    assert json.loads((run / "run.json").read_text()) == json.loads((reference / "run.json").read_text())
    ckpts = run / "checkpoints"
    assert {p.name for p in ckpts.iterdir()} >= {"3", "6"}

    # As if the run had died after step 3's checkpoint: the next pair of processes restores it and goes on.
    shutil.rmtree(ckpts / "6")
    out0, err0, out1, err1 = _two_processes(_cli(_argv(data_dir, run)), tmp_path / "logs2", env)
    assert f"resuming {run} from the checkpoint of step 3" in err0
    assert "resuming" not in err1 and '"export"' not in out1  # process 0 alone reports
    assert json.loads(out0.splitlines()[-1])["step"] == 6
    assert _numbers(run) == uninterrupted

    # Process 0 exported the gathered params.
    got, ref = (load_file(r / "hf" / "model.safetensors") for r in (run, reference))
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=PARAM_ATOL)

    # The same checkpoint also restores on one device, in this process, and goes on with the one-device numbers.
    shutil.rmtree(ckpts / "6")
    assert main(_argv(data_dir, run)) == 0
    for got, ref in zip(_numbers(run), want, strict=True):
        assert got == pytest.approx(ref, rel=RTOL)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--mesh", MESH], "mesh data=2,tensor=4 has 8 devices, but 1 are available"),
        (["--mesh", "data=2;tensor=4"], "bad mesh 'data=2;tensor=4': expected AXIS=SIZE,... with axes from data, fsdp, tensor"),
        (["--num-processes", "2", "--process-id", "0"], "a multi-process run needs a coordinator address (host:port)"),
        (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "process id 2 is not in [0, 2) processes"),
    ],
)
def test_bad_mesh_or_cluster_flags_are_one_line(data_dir, tmp_path, capsys, flags, message):
    argv = ["lm", "--data", str(data_dir), "--out", str(tmp_path / "run"), *TINY_MODEL, *flags]
    assert main(argv) == 2
    assert one_error_line(capsys.readouterr().err) == f"jaxspec-train lm: error: {message}"


def test_two_processes_without_a_mesh_are_one_line_each(data_dir, tmp_path):
    outs = _two_processes(_cli(_argv(data_dir, tmp_path / "run"), mesh=()), tmp_path, dict(os.environ), returncode=2)
    for err in outs[1::2]:
        assert one_error_line(err) == "jaxspec-train lm: error: a multi-process run needs --mesh (axes that multiply to its 8 devices)"
