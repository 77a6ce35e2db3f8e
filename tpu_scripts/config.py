"""Load and check a slice config (a small TOML file, see tpu_scripts/configs/)."""

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tpu_scripts.accelerators import worker_count

PROVISIONING = ("standard", "spot", "preemptible")
REQUIRED = ("project", "zone", "accelerator_type", "runtime_version")
OPTIONAL = {"python_version": "3.12", "provisioning": "standard", "env": {}}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(Exception):
    """A config that cannot be used; the message is one line meant for the user."""


@dataclass(frozen=True)
class SliceConfig:
    project: str
    zone: str
    accelerator_type: str
    runtime_version: str
    # The TPU VM images ship Python 3.10 and jaxspec needs >= 3.11, so install puts this
    # Python in a virtual environment on every worker.
    python_version: str
    provisioning: str
    env: dict[str, str]
    workers: int


def load_config(path: str | Path) -> SliceConfig:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path} is not valid TOML: {e}") from None

    def fail(reason: str) -> ConfigError:
        return ConfigError(f"config {path}: {reason}")

    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise fail(f"unknown key(s) {', '.join(unknown)}")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise fail(f"missing key(s) {', '.join(missing)}")
    values = {**OPTIONAL, **raw}
    for key in (*REQUIRED, "python_version", "provisioning"):
        if not isinstance(values[key], str) or not values[key].strip():
            raise fail(f"{key} must be a non-empty string")
    if values["provisioning"] not in PROVISIONING:
        raise fail(f"provisioning must be one of {', '.join(PROVISIONING)}")
    env = values["env"]
    if not isinstance(env, dict):
        raise fail("env must be a table of NAME = \"value\"")
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name) or not isinstance(value, str):
            raise fail(f"env entry {name!r} must be NAME = \"string value\"")
    values["env"] = dict(env)
    try:
        workers = worker_count(values["accelerator_type"])
    except ValueError as e:
        raise fail(str(e)) from None
    return SliceConfig(**values, workers=workers)
