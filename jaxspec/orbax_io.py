"""jaxspec's own checkpoint format: an orbax parameter tree beside the Hugging Face config.

Layout of a jaxspec checkpoint directory:
    jaxspec.json   {"format": "jaxspec", "version": 1}
    config.json    the Hugging Face config, kept whole so the way back is exact
    params/        the parameter tree, written by orbax
    tokenizer.json, generation_config.json, ...   the source's side files
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxspec.atomic import atomic_directory
from jaxspec.errors import CheckpointError
from jaxspec.hf_io import read_json, write_side_files

MARKER = "jaxspec.json"
FORMAT_VERSION = 1


def is_jaxspec_dir(path: Path) -> bool:
    return (path / MARKER).exists()


def save_jaxspec(out_dir: Path, params, hf_config: dict, side_files: Mapping[str, bytes]) -> None:
    with atomic_directory(out_dir) as tmp:
        with open(tmp / MARKER, "w") as f:
            json.dump({"format": "jaxspec", "version": FORMAT_VERSION}, f)
        with open(tmp / "config.json", "w") as f:
            json.dump(hf_config, f, indent=2, sort_keys=True)
        write_side_files(side_files, tmp)
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save((tmp / "params").absolute(), params)
        checkpointer.wait_until_finished()


def restore_params(directory: Path):
    """The parameter tree as stored (numpy leaves), after checking the marker."""
    marker = read_json(directory / MARKER, "jaxspec checkpoint marker")
    if marker.get("format") != "jaxspec" or marker.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: unknown jaxspec checkpoint format {marker}")
    params_dir = (directory / "params").absolute()
    if not params_dir.is_dir():
        raise CheckpointError(f"{directory}: no params/ directory")
    try:
        return ocp.StandardCheckpointer().restore(params_dir)
    except Exception as e:  # orbax raises many types for unreadable data
        raise CheckpointError(f"{directory}: corrupted orbax checkpoint ({type(e).__name__}: {e})") from None


def checked_params(directory: Path, restored, abstract_params, dtype=None):
    """`restored` as the model's param tree: names what is missing, extra or misshapen; cast to dtype."""
    want = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(abstract_params)}
    got = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(restored)}
    missing = sorted(set(want) - set(got))
    if missing:
        raise CheckpointError(f"{directory}: missing tensor(s) {', '.join(missing[:3])}")
    extra = sorted(set(got) - set(want))
    if extra:
        raise CheckpointError(f"{directory}: unexpected tensor(s) {', '.join(extra[:3])}")
    for key, leaf in want.items():
        if tuple(got[key].shape) != tuple(leaf.shape):
            raise CheckpointError(
                f"{directory}: tensor {key} has shape {list(got[key].shape)}, expected {list(leaf.shape)}"
            )
    if dtype is not None:
        restored = jax.tree_util.tree_map(lambda x: np.asarray(x).astype(dtype), restored)
    return jax.tree_util.tree_map(jax.numpy.asarray, restored)
