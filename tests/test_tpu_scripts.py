"""tpu_scripts: every subcommand's --dry-run prints the right gcloud commands and runs nothing;
bad input is one line on stderr with exit code 2; a real run executes exactly what --dry-run
prints (against a fake gcloud, since nothing here can reach Google Cloud)."""

import itertools
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tpu_scripts import cli
from tpu_scripts.accelerators import worker_count
from tpu_scripts.config import load_config

REPO = Path(__file__).resolve().parent.parent
V4 = str(REPO / "tpu_scripts" / "configs" / "v4-8.toml")
V5E = str(REPO / "tpu_scripts" / "configs" / "v5e-16.toml")
GCLOUD_TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]


@pytest.fixture
def dry_run(monkeypatch, capsys):
    """Run the CLI in-process with --dry-run; any attempt to start a process fails the test."""

    def forbidden(*args, **kwargs):
        pytest.fail(f"dry run tried to execute {args!r}")

    for name in ("run", "Popen", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, forbidden)
    monkeypatch.setattr(os, "system", forbidden)

    def run(*argv):
        code = cli.main(before_passthrough(list(argv), "--dry-run"))
        out, err = capsys.readouterr()
        assert (code, err) == (0, "")
        return [shlex.split(line) for line in out.splitlines()]

    return run


def before_passthrough(argv, *options):
    """argv with options inserted before the first `--` (after it, everything is passed on)."""
    split = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:split], *options, *argv[split:]]


def flag(argv, name):
    """The value of --name=VALUE or --name VALUE in argv."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return argv[i + 1]
    raise AssertionError(f"{name} not in {argv}")


def test_create_v4_8(dry_run):
    [argv] = dry_run("create", "--config", V4, "--name", "jaxspec-v4")
    assert argv[:6] == [*GCLOUD_TPU_VM, "create", "jaxspec-v4"]
    assert flag(argv, "--zone") == "us-central2-b"
    assert flag(argv, "--accelerator-type") == "v4-8"
    assert flag(argv, "--version") == "tpu-ubuntu2204-base"
    assert flag(argv, "--project") == "your-gcp-project"
    assert "--spot" not in argv and "--preemptible" not in argv


def test_create_v5e_16_is_spot_from_config_and_flag_overrides(dry_run):
    [argv] = dry_run("create", "--config", V5E, "--name", "jaxspec-v5e")
    assert flag(argv, "--zone") == "us-west4-a"
    assert flag(argv, "--accelerator-type") == "v5litepod-16"
    assert flag(argv, "--version") == "v2-alpha-tpuv5-lite"
    assert "--spot" in argv
    [argv] = dry_run("create", "--config", V5E, "--name", "jaxspec-v5e", "--preemptible")
    assert "--preemptible" in argv and "--spot" not in argv


def test_install_builds_wheel_copies_it_everywhere_and_installs_jax_tpu(dry_run):
    build, copy, install = dry_run("install", "--config", V5E, "--name", "jaxspec-v5e")
    assert build[:4] == [sys.executable, "-m", "pip", "wheel"]
    assert "--no-deps" in build
    wheel = "jaxspec-0.1.0-py3-none-any.whl"
    assert copy[:5] == [*GCLOUD_TPU_VM, "scp"]
    assert copy[5] == f"{flag(build, '--wheel-dir')}/{wheel}" and copy[6] == "jaxspec-v5e:"
    assert flag(copy, "--worker") == "all" and flag(copy, "--zone") == "us-west4-a"
    assert install[:6] == [*GCLOUD_TPU_VM, "ssh", "jaxspec-v5e"]
    assert flag(install, "--worker") == "all" and flag(install, "--zone") == "us-west4-a"
    remote = shlex.split(flag(install, "--command"))
    assert "jax[tpu]" in remote and f"~/{wheel}" in remote
    assert ["venv", "--python", "3.12"] == remote[remote.index("venv"):remote.index("venv") + 3]


def test_upload_copies_recursively_to_all_workers(dry_run):
    [argv] = dry_run("upload", "--config", V4, "--name", "jaxspec-v4", str(REPO / "tpu_scripts"))
    assert argv[:7] == [*GCLOUD_TPU_VM, "scp", str(REPO / "tpu_scripts"), "jaxspec-v4:"]
    assert "--recurse" in argv and flag(argv, "--worker") == "all"


def test_train_starts_detached_on_all_workers_with_env_and_log(dry_run):
    [argv] = dry_run("train", "--config", V5E, "--name", "jaxspec-v5e",
                     "--", "--data", "my corpus", "--mesh", "data=4,tensor=4")
    assert argv[:6] == [*GCLOUD_TPU_VM, "ssh", "jaxspec-v5e"]
    assert flag(argv, "--worker") == "all" and flag(argv, "--zone") == "us-west4-a"
    remote = flag(argv, "--command")
    words = shlex.split(remote)
    program = words.index("~/jaxspec-venv/bin/jaxspec-train")
    assert words[program + 1:program + 5] == ["--data", "my corpus", "--mesh", "data=4,tensor=4"]
    assert "JAX_PLATFORMS=tpu" in words[:program] and words[program - 1] == "nohup"
    assert "> jaxspec_logs/train.log 2>&1 < /dev/null &" in remote


def test_train_wait_streams_and_keeps_the_exit_code(dry_run):
    [argv] = dry_run("train", "--config", V4, "--name", "jaxspec-v4", "--wait", "--job", "run1")
    remote = flag(argv, "--command")
    assert remote.startswith("set -o pipefail;") and remote.endswith("| tee jaxspec_logs/run1.log")
    assert "nohup" not in remote


def test_generate_runs_jaxspec_generate_with_the_model(dry_run):
    [argv] = dry_run("generate", "--config", V4, "--name", "jaxspec-v4", "--model", "demo/target",
                     "--", "--prompt", "def f(x):", "--max-new-tokens", "32")
    assert flag(argv, "--worker") == "all" and flag(argv, "--zone") == "us-central2-b"
    words = shlex.split(flag(argv, "--command"))
    program = words.index("~/jaxspec-venv/bin/jaxspec")
    assert words[program + 1:program + 8] == [
        "generate", "--model", "demo/target", "--prompt", "def f(x):", "--max-new-tokens", "32"]
    assert "jaxspec_logs/generate.log" in words


@pytest.mark.parametrize("config, workers", [(V4, 1), (V5E, 4)])
def test_logs_fetches_one_file_per_worker(dry_run, tmp_path, config, workers):
    argvs = dry_run("logs", "--config", config, "--name", "tpu", "--job", "run1", "--out", str(tmp_path))
    assert len(argvs) == workers
    for worker, argv in enumerate(argvs):
        assert argv[:7] == [*GCLOUD_TPU_VM, "scp", "tpu:jaxspec_logs/run1.log",
                            str(tmp_path / f"run1.worker-{worker}.log")]
        assert flag(argv, "--worker") == str(worker)
    assert not any(tmp_path.iterdir())


def test_delete_is_quiet(dry_run):
    [argv] = dry_run("delete", "--config", V5E, "--name", "jaxspec-v5e")
    assert argv[:6] == [*GCLOUD_TPU_VM, "delete", "jaxspec-v5e"]
    assert "--quiet" in argv and flag(argv, "--zone") == "us-west4-a"


def test_shipped_configs():
    v4, v5e = load_config(V4), load_config(V5E)
    assert (v4.accelerator_type, v4.runtime_version, v4.workers) == ("v4-8", "tpu-ubuntu2204-base", 1)
    assert (v5e.accelerator_type, v5e.runtime_version, v5e.workers) == ("v5litepod-16", "v2-alpha-tpuv5-lite", 4)
    assert v4.env["JAX_PLATFORMS"] == v5e.env["JAX_PLATFORMS"] == "tpu"


@pytest.mark.parametrize("accelerator, workers", [
    ("v4-8", 1), ("v4-16", 2), ("v4-32", 4), ("v5litepod-4", 1), ("v5litepod-8", 1),
    ("v5litepod-16", 4), ("v5litepod-256", 64)])
def test_worker_count(accelerator, workers):
    assert worker_count(accelerator) == workers


GOOD_CONFIG = """\
project = "p"
zone = "us-central2-b"
accelerator_type = "v4-8"
runtime_version = "tpu-ubuntu2204-base"
"""


@pytest.mark.parametrize("config_text, argv, message", [
    (None, ["delete", "--name", "tpu"], "config file not found"),
    ("project = [", ["delete", "--name", "tpu"], "not valid TOML"),
    (GOOD_CONFIG.replace('zone = "us-central2-b"\n', ""), ["delete", "--name", "tpu"], "missing key(s) zone"),
    (GOOD_CONFIG.replace("v4-8", "v9-8"), ["create", "--name", "tpu"], "unknown accelerator type 'v9-8'"),
    (GOOD_CONFIG.replace("v4-8", "v5e-16"), ["create", "--name", "tpu"], "gcloud calls it v5litepod-16"),
    (GOOD_CONFIG.replace("v4-8", "v4-12"), ["create", "--name", "tpu"], "unknown accelerator type"),
    (GOOD_CONFIG + "zones = 1\n", ["create", "--name", "tpu"], "unknown key(s) zones"),
    (GOOD_CONFIG + 'provisioning = "cheap"\n', ["create", "--name", "tpu"], "provisioning must be"),
    (GOOD_CONFIG + "[env]\nX = 1\n", ["train", "--name", "tpu"], "env entry 'X'"),
    (GOOD_CONFIG, ["create"], "the following arguments are required: --name"),
    (GOOD_CONFIG, ["create", "--name", "My_TPU"], "invalid --name"),
    (GOOD_CONFIG, ["logs", "--name", "tpu", "--job", "../x"], "invalid --job"),
    (GOOD_CONFIG, ["delete", "--name", "tpu", "--", "--force"], "delete takes no arguments after --"),
    (GOOD_CONFIG, ["upload", "--name", "tpu", "no/such/path"], "no such file or directory"),
    (GOOD_CONFIG, ["create", "--name", "tpu", "--spot", "--preemptible"], "not allowed with argument"),
    (GOOD_CONFIG, ["resize", "--name", "tpu"], "invalid choice: 'resize'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, config_text, argv, message):
    config = tmp_path / "slice.toml"
    if config_text is not None:
        config.write_text(config_text)
    code = cli.main(before_passthrough(argv, "--config", str(config), "--dry-run"))
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("tpu_scripts: error: ") and message in err


def test_missing_config_flag_is_one_line(capsys):
    assert cli.main(["delete", "--name", "tpu", "--dry-run"]) == 2
    assert capsys.readouterr().err == "tpu_scripts: error: the following arguments are required: --config\n"


def _fake_gcloud(directory: Path, record: Path, exit_code: int) -> None:
    script = directory / "gcloud"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        with open({str(record)!r}, "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\\n")
        sys.exit({exit_code})
        """))
    script.chmod(0o755)


def test_dry_run_as_a_process_never_calls_gcloud(tmp_path):
    record = tmp_path / "calls.jsonl"
    _fake_gcloud(tmp_path, record, exit_code=1)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    common = ["--config", V5E, "--name", "jaxspec-v5e", "--dry-run"]
    for argv in (["create"], ["install"], ["upload", V4], ["train", "--", "--steps", "1"],
                 ["generate", "--model", "m"], ["logs"], ["delete"]):
        done = subprocess.run([sys.executable, "-m", "tpu_scripts", *before_passthrough(argv, *common)],
                              cwd=REPO, env=env, capture_output=True, text=True)
        assert (done.returncode, done.stderr) == (0, ""), argv
        assert done.stdout.startswith(("gcloud ", sys.executable))
    assert not record.exists()
    done = subprocess.run([sys.executable, "-m", "tpu_scripts", "delete", "--config", "missing.toml",
                           "--name", "x"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == "tpu_scripts: error: config file not found: missing.toml\n"


def test_a_real_run_executes_exactly_the_dry_run_commands(tmp_path, monkeypatch, capsys):
    record = tmp_path / "calls.jsonl"
    _fake_gcloud(tmp_path, record, exit_code=0)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    out_dir = tmp_path / "logs"
    common = ["--config", V5E, "--name", "jaxspec-v5e"]
    for argv in (["create", *common, "--spot"], ["train", *common, "--", "--steps", "1"],
                 ["logs", *common, "--out", str(out_dir)], ["delete", *common]):
        assert cli.main(before_passthrough(argv, "--dry-run")) == 0
        printed = [shlex.split(line)[1:] for line in capsys.readouterr().out.splitlines()]
        record.unlink(missing_ok=True)
        assert cli.main(argv) == 0
        capsys.readouterr()
        assert [json.loads(line) for line in record.read_text().splitlines()] == printed
    assert out_dir.is_dir()


def test_a_failing_gcloud_stops_with_its_exit_code(tmp_path, monkeypatch, capsys):
    record = tmp_path / "calls.jsonl"
    _fake_gcloud(tmp_path, record, exit_code=3)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert cli.main(["logs", "--config", V5E, "--name", "tpu", "--out", str(tmp_path / "logs")]) == 3
    assert len(record.read_text().splitlines()) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("tpu_scripts: error: exit code 3 from: gcloud ")


def test_docs_show_the_real_dry_run_output(monkeypatch, capsys):
    """Every `$ python -m tpu_scripts ...` example in docs/tpu.md prints what the doc says."""
    monkeypatch.chdir(REPO)
    lines = [line.strip() for line in (REPO / "docs" / "tpu.md").read_text().splitlines()]
    examples = [i for i, line in enumerate(lines) if line.startswith("$ python -m tpu_scripts ")]
    assert len(examples) >= 10
    for i in examples:
        argv = shlex.split(lines[i])[4:]
        if argv[0] == "upload":  # its example folder is not in the repository
            continue
        expected = list(itertools.takewhile(lambda line: line and line != "```", lines[i + 1:]))
        assert cli.main(argv) == 0
        printed = capsys.readouterr().out.replace(sys.executable, "python").splitlines()
        assert printed == expected, lines[i]
