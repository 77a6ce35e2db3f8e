"""python -m tpu_scripts COMMAND --config FILE --name TPU_NAME [--dry-run] [options] [-- ARGS]"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from tpu_scripts import commands
from tpu_scripts.config import ConfigError, load_config

PROG = "tpu_scripts"
REPO_ROOT = Path(__file__).resolve().parent.parent
# Local artifacts (the wheel, fetched logs) go under dist/, which git ignores.
LOCAL_DIR = REPO_ROOT / "dist" / "tpu"
TPU_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
PASSTHROUGH_COMMANDS = ("train", "generate")


class UsageError(Exception):
    """Bad command-line input; the message is one line meant for the user."""


class _OneLineErrorParser(argparse.ArgumentParser):
    """Bad input is one line on stderr and exit code 2: no usage dump, no traceback."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog=PROG, description="Drive a Cloud TPU VM slice for jaxspec through gcloud (docs/tpu.md).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", required=True, help="slice config, e.g. tpu_scripts/configs/v4-8.toml")
    common.add_argument("--name", required=True, help="name of the TPU VM")
    common.add_argument("--dry-run", action="store_true", help="print the commands, one per line, and run none")

    create = sub.add_parser("create", parents=[common], help="create the TPU VM or pod slice")
    provisioning = create.add_mutually_exclusive_group()
    provisioning.add_argument("--spot", action="store_const", const="spot", dest="provisioning",
                              help="Spot VM (overrides the config's provisioning)")
    provisioning.add_argument("--preemptible", action="store_const", const="preemptible",
                              dest="provisioning", help="preemptible VM (overrides the config)")
    sub.add_parser("install", parents=[common], help="build a wheel, install it and jax[tpu] on every worker")
    upload = sub.add_parser("upload", parents=[common], help="copy local files or folders to every worker's home")
    upload.add_argument("paths", nargs="+", metavar="PATH")
    for name, what in (("train", "jaxspec-train ARGS"), ("generate", "jaxspec generate --model PATH ARGS")):
        launch = sub.add_parser(name, parents=[common], help=f"run `{what}` on all workers (ARGS after --)")
        if name == "generate":
            launch.add_argument("--model", required=True, help="model directory on the workers")
        launch.add_argument("--job", default=name, help=f"log name: jaxspec_logs/JOB.log (default {name})")
        launch.add_argument("--wait", action="store_true", help="stay attached and stream the output")
    logs = sub.add_parser("logs", parents=[common], help="copy each worker's log into a local folder")
    logs.add_argument("--job", default="train", help="which log (default train)")
    logs.add_argument("--out", help="local folder (default dist/tpu/logs/NAME)")
    sub.add_parser("delete", parents=[common], help="delete the TPU VM")
    return parser


def _wheel_name() -> str:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return f"{re.sub(r'[-_.]+', '_', project['name']).lower()}-{project['version']}-py3-none-any.whl"


def _build(args: argparse.Namespace, passthrough: list[str]) -> list[list[str]]:
    if not TPU_NAME.fullmatch(args.name):
        raise UsageError(f"invalid --name {args.name!r}: lowercase letters, digits and hyphens, "
                         "starting with a letter, at most 63 characters")
    if getattr(args, "job", None) is not None and not JOB_NAME.fullmatch(args.job):
        raise UsageError(f"invalid --job {args.job!r}: letters, digits, '.', '_' and '-' only")
    if passthrough and args.command not in PASSTHROUGH_COMMANDS:
        raise UsageError(f"{args.command} takes no arguments after --")
    cfg = load_config(args.config)
    match args.command:
        case "create":
            return commands.create(cfg, args.name, args.provisioning or cfg.provisioning)
        case "install":
            return commands.install(cfg, args.name, sys.executable, os.path.relpath(REPO_ROOT),
                                    os.path.relpath(LOCAL_DIR), _wheel_name())
        case "upload":
            missing = [path for path in args.paths if not os.path.exists(path)]
            if missing:
                raise UsageError(f"no such file or directory: {missing[0]}")
            return commands.upload(cfg, args.name, args.paths)
        case "train":
            return commands.train(cfg, args.name, passthrough, args.job, args.wait)
        case "generate":
            if not args.model:
                raise UsageError("--model must not be empty")
            return commands.generate(cfg, args.name, args.model, passthrough, args.job, args.wait)
        case "logs":
            return commands.fetch_logs(cfg, args.name, args.job, _logs_dir(args))
        case "delete":
            return commands.delete(cfg, args.name)
    raise AssertionError(args.command)


def _logs_dir(args: argparse.Namespace) -> str:
    return args.out or os.path.relpath(LOCAL_DIR / "logs" / args.name)


def _run(argvs: list[list[str]]) -> int:
    for argv in argvs:
        print(f"+ {shlex.join(argv)}", file=sys.stderr, flush=True)
        try:
            code = subprocess.run(argv).returncode
        except FileNotFoundError:
            print(f"{PROG}: error: {argv[0]} not found on PATH (install it, or use --dry-run)",
                  file=sys.stderr)
            return 127
        if code != 0:
            print(f"{PROG}: error: exit code {code} from: {shlex.join(argv)}", file=sys.stderr)
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Everything after the first `--` goes to jaxspec-train / jaxspec generate untouched.
    split = argv.index("--") if "--" in argv else len(argv)
    try:
        args = _parser().parse_args(argv[:split])
    except SystemExit as e:  # argparse has already printed its one line (or --help)
        return e.code
    try:
        argvs = _build(args, argv[split + 1:])
    except (ConfigError, UsageError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(map(shlex.join, argvs)))
        return 0
    if args.command == "logs":
        Path(_logs_dir(args)).mkdir(parents=True, exist_ok=True)
    return _run(argvs)
