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


def _params_dir(directory: Path) -> Path:
    marker = read_json(directory / MARKER, "jaxspec checkpoint marker")
    if marker.get("format") != "jaxspec" or marker.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: unknown jaxspec checkpoint format {marker}")
    params_dir = (directory / "params").absolute()
    if not params_dir.is_dir():
        raise CheckpointError(f"{directory}: no params/ directory")
    return params_dir


def _unreadable(directory: Path, e: Exception) -> CheckpointError:
    # orbax raises many types for unreadable data
    return CheckpointError(f"{directory}: corrupted orbax checkpoint ({type(e).__name__}: {e})")


def restore_params(directory: Path):
    """The parameter tree as stored (numpy leaves), after checking the marker."""
    params_dir = _params_dir(directory)
    try:
        return ocp.StandardCheckpointer().restore(params_dir)
    except Exception as e:
        raise _unreadable(directory, e) from None


def stored_shapes(directory: Path):
    """The parameter tree's shapes and dtypes (jax.ShapeDtypeStruct leaves) from orbax's metadata: no data read."""
    params_dir = _params_dir(directory)
    try:
        tree = ocp.StandardCheckpointer().metadata(params_dir).item_metadata.tree
    except Exception as e:
        raise _unreadable(directory, e) from None
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(tuple(x.shape), x.dtype), tree,
                                  is_leaf=lambda x: hasattr(x, "shape"))


def restore_one(directory: Path, path: tuple[str, ...]) -> np.ndarray:
    """One stored tensor (its param path), read alone: orbax's partial restore touches only its chunks."""
    item: dict = {}
    node = item
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = ocp.RestoreArgs(restore_type=np.ndarray)
    try:
        restored = ocp.PyTreeCheckpointer().restore(
            _params_dir(directory), args=ocp.args.PyTreeRestore(item=item, restore_args=item, partial_restore=True)
        )
    except Exception as e:
        raise _unreadable(directory, e) from None
    for key in path:
        restored = restored[key]
    return restored


def restore_sharded(directory: Path, stored, shardings, dtype=None):
    """The params restored straight into `shardings` (a tree of NamedSharding like `stored`, which
    check_params has checked): each process reads only the shards its devices hold; cast to dtype."""
    target = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), stored, shardings)
    try:
        restored = ocp.StandardCheckpointer().restore(_params_dir(directory), target)
    except Exception as e:
        raise _unreadable(directory, e) from None
    return restored if dtype is None else jax.tree_util.tree_map(lambda x: x.astype(dtype), restored)


def checked_params(directory: Path, restored, abstract_params, dtype=None):
    """`restored` as the model's param tree: names what is missing, extra or misshapen; cast to dtype."""
    check_params(directory, restored, abstract_params)
    if dtype is not None:
        restored = jax.tree_util.tree_map(lambda x: np.asarray(x).astype(dtype), restored)
    return jax.tree_util.tree_map(jax.numpy.asarray, restored)


def check_params(directory: Path, restored, abstract_params) -> None:
    """One line for the first tensor missing, unexpected or misshapen in `restored` (arrays or shapes)."""
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
