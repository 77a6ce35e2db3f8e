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
import numpy as np
from safetensors import SafetensorError, safe_open

from jaxspec.atomic import atomic_directory
from jaxspec.errors import CheckpointError
from jaxspec.safetensors_out import (
    DEFAULT_MAX_SHARD_BYTES, INDEX_FILE, WEIGHTS_FILE, Entry, stored_dtype, write_safetensors,
)
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


def _by_file(files: dict[str, Path], names: list[str]) -> dict[Path, list[str]]:
    by_file: dict[Path, list[str]] = {}
    for n in names:
        by_file.setdefault(files[n], []).append(n)
    return by_file


def _read_tensors(files: dict[str, Path], names: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Each tensor read from a file opened for it alone: closing the file unmaps the pages the read touched,
    so a stream over a checkpoint larger than memory holds one tensor's pages, not the whole file's."""
    for n in names:
        try:
            with safe_open(str(files[n]), framework="numpy") as f:
                tensor = f.get_tensor(n)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{files[n]}: corrupted safetensors file ({e})") from None
        yield n, tensor


def weight_reader(directory: Path):
    """(the tensor names a safetensors checkpoint holds, read(names) yielding (name, tensor) one at a time)."""
    files = _weight_files(directory)
    return set(files), lambda names: _read_tensors(files, names)


def stored_dtypes(directory: Path) -> dict[str, np.dtype]:
    """Tensor name → its stored dtype, from the safetensors headers alone."""
    files, out = _weight_files(directory), {}
    for file, names in _by_file(files, sorted(files)).items():
        try:
            with safe_open(str(file), framework="flax") as f:
                out.update({n: f.get_slice(n).get_dtype() for n in names})
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{file}: corrupted safetensors file ({e})") from None
    try:
        return {n: stored_dtype(code) for n, code in out.items()}
    except ValueError as e:
        raise CheckpointError(f"{directory}: {e}") from None


def tensor_names(directory: Path) -> set[str]:
    """The names of the tensors a safetensors checkpoint holds (headers only)."""
    return set(_weight_files(directory))


def load_params(directory: Path, model, abstract_params, dtype=None) -> dict:
    """Reads and checks every tensor the model expects from a safetensors checkpoint."""
    return place_tensors(str(directory), model, abstract_params, *weight_reader(directory), dtype)


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


def checked_tensors(where: str, model, abstract_params, present: set[str], read, dtype=None):
    """(param path, tensor in the param's layout) for every tensor the model expects, one at a time.

    `present` names what the source holds; `read(names)` yields (name, array) for those names, in any
    order, as numpy arrays (a kernel's transpose is then a view, not a copy). Names what is missing,
    extra or misshapen, whatever the source format."""
    expected = _expected_names(where, model, abstract_params, present)
    abstract = flatten(abstract_params)
    for name, tensor in read(sorted(expected)):
        path = expected[name]
        want = abstract[path].shape
        hf_shape = tuple(reversed(want)) if _is_kernel(path) else tuple(want)
        if tuple(tensor.shape) != hf_shape:
            raise CheckpointError(f"{where}: tensor {name} has shape {list(tensor.shape)}, expected {list(hf_shape)}")
        value = tensor.T if _is_kernel(path) else tensor
        yield path, (value.astype(dtype) if dtype is not None else value)


def place_tensors(where: str, model, abstract_params, present: set[str], read, dtype=None, shardings=None) -> dict:
    """The param tree from tensors stored under their Hugging Face names, in Hugging Face layout
    (checked_tensors). With `shardings` (a tree like the params) each tensor is placed as soon as it is
    read, so no more than one whole tensor is held besides the shards."""
    placement = None if shardings is None else flatten(shardings)
    flat = {}
    for path, value in checked_tensors(where, model, abstract_params, present, read, dtype):
        # Each device's block cut from this process's copy: no cross-process transfer, unlike device_put.
        flat[path] = jax.numpy.asarray(value) if shardings is None else jax.make_array_from_callback(
            value.shape, placement[path], lambda index, value=np.asarray(value): value[index])
    return unflatten(flat)


def save_hf(out_dir: Path, model, params, hf_config: dict, side_files: Mapping[str, bytes], dtype_name: str,
            max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
    """Writes a directory that transformers' from_pretrained loads (atomically), with `side_files`
    (file name → content: tokenizer, generation config) beside the weights."""
    flat = flatten(params)
    write_hf(out_dir, model, {p: jax.ShapeDtypeStruct(x.shape, x.dtype) for p, x in flat.items()}, flat.items(),
             hf_config, side_files, dtype_name, max_shard_bytes)


def write_hf(out_dir: Path, model, shapes: Mapping[tuple[str, ...], Any], tensors, hf_config: dict,
             side_files: Mapping[str, bytes], dtype_name: str, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
    """save_hf from a stream: `shapes` gives every param path's shape and dtype, `tensors` yields (path,
    array in the param's layout) in any order, and each is written as it comes (jaxspec/safetensors_out.py),
    so a conversion holds one tensor at a time. Several shards and an index past max_shard_bytes."""
    entries = [
        Entry(model.hf_tensor_name(p), np.dtype(x.dtype), tuple(reversed(x.shape)) if _is_kernel(p) else tuple(x.shape))
        for p, x in shapes.items()
    ]
    hf_tensors = ((model.hf_tensor_name(p), np.asarray(v).T if _is_kernel(p) else np.asarray(v)) for p, v in tensors)
    config = dict(hf_config)
    config["dtype"] = dtype_name
    config.pop("torch_dtype", None)
    with atomic_directory(out_dir) as tmp:
        write_safetensors(tmp, entries, hf_tensors, max_shard_bytes)
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
