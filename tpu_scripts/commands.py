"""Build the argv lists each subcommand runs. Nothing here executes anything.

Paths on the workers are relative to the worker's home directory, where every remote
command starts; only constant paths are left unquoted so that the remote shell expands `~`.
"""

import shlex
from pathlib import Path

from tpu_scripts.config import SliceConfig

GCLOUD_TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
REMOTE_VENV = "~/jaxspec-venv"
REMOTE_UV = "~/.local/bin/uv"
REMOTE_LOG_DIR = "jaxspec_logs"


def _scope(cfg: SliceConfig) -> list[str]:
    # --project on every call so that nothing depends on the local gcloud default project.
    return [f"--zone={cfg.zone}", f"--project={cfg.project}"]


def _ssh_all(cfg: SliceConfig, name: str, remote_command: str) -> list[str]:
    return [*GCLOUD_TPU_VM, "ssh", name, "--worker=all", "--command", remote_command, *_scope(cfg)]


def create(cfg: SliceConfig, name: str, provisioning: str) -> list[list[str]]:
    argv = [
        *GCLOUD_TPU_VM, "create", name, *_scope(cfg),
        f"--accelerator-type={cfg.accelerator_type}", f"--version={cfg.runtime_version}",
    ]
    if provisioning != "standard":
        argv.append(f"--{provisioning}")
    return [argv]


def install(cfg: SliceConfig, name: str, python: str, project_dir: str, wheel_dir: str,
            wheel_name: str) -> list[list[str]]:
    """Build a wheel of this checkout, copy it to every worker, install it with jax[tpu]."""
    # uv fetches the Python the config asks for (the images' own is too old); reinstalling
    # jaxspec by name makes a rebuilt wheel with an unchanged version number take effect.
    remote = " && ".join([
        "python3 -m pip install --user --quiet --upgrade uv",
        f"(test -x {REMOTE_VENV}/bin/python || "
        f"{REMOTE_UV} venv --python {shlex.quote(cfg.python_version)} {REMOTE_VENV})",
        f"{REMOTE_UV} pip install --python {REMOTE_VENV}/bin/python --upgrade "
        f'--reinstall-package jaxspec "jax[tpu]" ~/{wheel_name}',
    ])
    return [
        [python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheel_dir, project_dir],
        [*GCLOUD_TPU_VM, "scp", f"{wheel_dir}/{wheel_name}", f"{name}:", "--worker=all", *_scope(cfg)],
        _ssh_all(cfg, name, remote),
    ]


def upload(cfg: SliceConfig, name: str, paths: list[str]) -> list[list[str]]:
    """Copy local files or folders (data, model directories) into every worker's home."""
    return [[*GCLOUD_TPU_VM, "scp", *paths, f"{name}:", "--recurse", "--worker=all", *_scope(cfg)]]


def _launch(cfg: SliceConfig, name: str, program: str, args: list[str], job: str,
            wait: bool) -> list[list[str]]:
    """Start the same program on all workers at once, as a multi-host JAX job requires.

    Each worker writes its output to jaxspec_logs/<job>.log in its home. Without --wait the
    program is detached (nohup, all streams redirected) so that ssh returns at once and a
    dropped connection does not kill a long run.
    """
    env = "".join(f"{key}={shlex.quote(value)} " for key, value in cfg.env.items())
    command = " ".join([f"{REMOTE_VENV}/bin/{program}", *map(shlex.quote, args)])
    log = f"{REMOTE_LOG_DIR}/{job}.log"
    if wait:
        remote = f"set -o pipefail; cd && mkdir -p {REMOTE_LOG_DIR} && {env}{command} 2>&1 | tee {log}"
    else:
        remote = (f"cd && mkdir -p {REMOTE_LOG_DIR} && "
                  f"{{ {env}nohup {command} > {log} 2>&1 < /dev/null & }}")
    return [_ssh_all(cfg, name, remote)]


def train(cfg: SliceConfig, name: str, args: list[str], job: str, wait: bool) -> list[list[str]]:
    return _launch(cfg, name, "jaxspec-train", args, job, wait)


def generate(cfg: SliceConfig, name: str, model: str, args: list[str], job: str,
             wait: bool) -> list[list[str]]:
    return _launch(cfg, name, "jaxspec", ["generate", "--model", model, *args], job, wait)


def fetch_logs(cfg: SliceConfig, name: str, job: str, out_dir: str) -> list[list[str]]:
    """One copy per worker: the log has the same name on every worker, so each gets its own."""
    return [
        [*GCLOUD_TPU_VM, "scp", f"{name}:{REMOTE_LOG_DIR}/{job}.log",
         str(Path(out_dir) / f"{job}.worker-{worker}.log"), f"--worker={worker}", *_scope(cfg)]
        for worker in range(cfg.workers)
    ]


def delete(cfg: SliceConfig, name: str) -> list[list[str]]:
    return [[*GCLOUD_TPU_VM, "delete", name, *_scope(cfg), "--quiet"]]
