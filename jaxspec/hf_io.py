"""Hugging Face checkpoint directories in and out, with no torch at run time.

Each model names its tensors (`model.hf_tensor_name(path)`, e.g.
`layers_3/self_attn/q_proj/kernel` ↔ `model.layers.3.self_attn.q_proj.weight`)
and lists the tied copies a checkpoint may also hold (`model.hf_aliases`).
Dense kernels are stored transposed; embeddings and norm scales are not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.flax import save_file

from jaxspec.atomic import atomic_directory
from jaxspec.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Files copied along with the weights when a checkpoint is converted.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "generation_config.json",
)
# Tensors some exporters add that carry no weights of ours.
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


def _is_kernel(path: tuple[str, ...]) -> bool:
    return path[-1] == "kernel"


def flat_paths(tree) -> list[tuple[str, ...]]:
    """Every leaf's path as a tuple of keys, e.g. ("layers_3", "self_attn", "q_proj", "kernel")."""
    return list(flatten(tree))


def flatten(tree) -> dict[tuple[str, ...], Any]:
    return {tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
    out: dict = {}
    for path, leaf in flat.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = leaf
    return out


def read_json(path: Path, what: str) -> dict:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: no {path.name} ({what})") from None
    return parse_json(content, path)


def parse_json(content: bytes, path: Path) -> dict:
    """A JSON object from a file's content; `path` names the file in errors."""
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupted JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _weight_files(directory: Path) -> dict[str, Path]:
    """Tensor name → file holding it, from the index or the single weights file."""
    index = directory / INDEX_FILE
    if index.exists():
        weight_map = read_json(index, "sharded index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no weight_map")
        files = {name: directory / fname for name, fname in weight_map.items()}
        for f in set(files.values()):
            if not f.exists():
                raise CheckpointError(f"{directory}: shard {f.name} named in {INDEX_FILE} is missing")
        return files
    single = directory / WEIGHTS_FILE
    if not single.exists():
        raise CheckpointError(f"{directory}: no {WEIGHTS_FILE} or {INDEX_FILE}")
    return {name: single for name in _tensor_names(single)}


def _tensor_names(file: Path) -> list[str]:
    try:
        with safe_open(str(file), framework="flax") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file}: corrupted safetensors file ({e})") from None


def _read_tensors(files: dict[str, Path], names: list[str]) -> Iterator[tuple[str, jax.Array]]:
    by_file: dict[Path, list[str]] = {}
    for n in names:
        by_file.setdefault(files[n], []).append(n)
    for file, file_names in by_file.items():
        try:
            with safe_open(str(file), framework="flax") as f:
                for n in file_names:
                    yield n, f.get_tensor(n)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{file}: corrupted safetensors file ({e})") from None


def tensor_names(directory: Path) -> set[str]:
    """The names of the tensors a safetensors checkpoint holds (headers only)."""
    return set(_weight_files(directory))


def load_params(directory: Path, model, abstract_params, dtype=None) -> dict:
    """Reads and checks every tensor the model expects from a safetensors checkpoint."""
    files = _weight_files(directory)
    return place_tensors(str(directory), model, abstract_params, set(files), lambda names: _read_tensors(files, names), dtype)


def load_params_sharded(directory: Path, model, abstract_params, shardings, dtype=None) -> dict:
    """As load_params, but each tensor goes straight into its sharding (a tree of NamedSharding matching the
    params): every device's block is read as a slice of the safetensors file, so a process reads only what
    its own devices hold and never the whole tensor (a kernel's block is the transpose of a slice of the
    stored [out, in] tensor)."""
    files = _weight_files(directory)
    where = str(directory)
    expected = _expected_names(where, model, abstract_params, set(files))
    abstract, placement = flatten(abstract_params), flatten(shardings)
    flat = {}
    for name in sorted(expected):
        path = expected[name]
        want, kernel = tuple(abstract[path].shape), _is_kernel(path)
        try:
            with safe_open(str(files[name]), framework="flax") as f:
                stored = f.get_slice(name)
                if tuple(stored.get_shape()) != (tuple(reversed(want)) if kernel else want):
                    raise CheckpointError(f"{where}: tensor {name} has shape {list(stored.get_shape())}, expected "
                                          f"{list(reversed(want)) if kernel else list(want)}")

                def block(index, stored=stored, kernel=kernel):
                    value = stored[tuple(reversed(index)) if kernel else index]
                    value = np.asarray(value.T if kernel else value)
                    return value.astype(dtype) if dtype is not None else value

                flat[path] = jax.make_array_from_callback(want, placement[path], block)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{files[name]}: corrupted safetensors file ({e})") from None
    return unflatten(flat)


def check_tensor_names(where, *, missing: set[str], extra: set[str]) -> None:
    """One line naming the first few missing (then unexpected) tensors, if any."""
    for what, names in (("missing", missing), ("unexpected", extra)):
        if names:
            names = sorted(names)
            more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
            raise CheckpointError(f"{where}: {what} tensor(s) {', '.join(names[:3])}{more}")


def _expected_names(where: str, model, abstract_params, present: set[str]) -> dict[str, tuple[str, ...]]:
    """Hugging Face tensor name -> param path, after checking that `present` holds those and nothing else."""
    expected = {model.hf_tensor_name(p): p for p in flatten(abstract_params)}
    check_tensor_names(where, missing=set(expected) - present,
                       extra={n for n in present - set(expected) if n not in model.hf_aliases and not _IGNORED.match(n)})
    return expected


def place_tensors(where: str, model, abstract_params, present: set[str], read, dtype=None, shardings=None) -> dict:
    """The param tree from tensors stored under their Hugging Face names, in Hugging Face layout.

    `present` names what the source holds; `read(names)` yields (name, array) for those names.
    Names what is missing, extra or misshapen, whatever the source format. With `shardings` (a tree like
    the params) each tensor is placed as soon as it is read, so no more than one whole tensor is held
    besides the shards.
    """
    expected = _expected_names(where, model, abstract_params, present)
    abstract = flatten(abstract_params)
    placement = None if shardings is None else flatten(shardings)
    flat = {}
    for name, tensor in read(sorted(expected)):
        path = expected[name]
        want = abstract[path].shape
        hf_shape = tuple(reversed(want)) if _is_kernel(path) else tuple(want)
        if tuple(tensor.shape) != hf_shape:
            raise CheckpointError(f"{where}: tensor {name} has shape {list(tensor.shape)}, expected {list(hf_shape)}")
        value = tensor.T if _is_kernel(path) else tensor
        value = value.astype(dtype) if dtype is not None else value
        # Each device's block cut from this process's copy: no cross-process transfer, unlike device_put.
        flat[path] = value if shardings is None else jax.make_array_from_callback(
            value.shape, placement[path], lambda index, value=np.asarray(value): value[index])
    return unflatten(flat)


def save_hf(out_dir: Path, model, params, hf_config: dict, side_files: Mapping[str, bytes], dtype_name: str) -> None:
    """Writes a directory that transformers' from_pretrained loads (atomically), with `side_files`
    (file name → content: tokenizer, generation config) beside the weights."""
    tensors = {}
    for path, leaf in flatten(params).items():
        value = jnp.asarray(leaf)
        tensors[model.hf_tensor_name(path)] = jnp.asarray(value.T if _is_kernel(path) else value)
    config = dict(hf_config)
    config["dtype"] = dtype_name
    config.pop("torch_dtype", None)
    with atomic_directory(out_dir) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        with open(tmp / "config.json", "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        write_side_files(side_files, tmp)


def read_side_files(src: Path) -> dict[str, bytes]:
    """The SIDE_FILES a checkpoint directory has, by name."""
    return {name: (src / name).read_bytes() for name in SIDE_FILES if (src / name).exists()}


def write_side_files(side_files: Mapping[str, bytes], dst: Path) -> None:
    for name, content in side_files.items():
        (dst / name).write_bytes(content)


def dtype_name(params) -> str:
    dtypes = {np.dtype(leaf.dtype).name for leaf in jax.tree_util.tree_leaves(params)}
    return dtypes.pop() if len(dtypes) == 1 else "float32"
