"""Safetensors files written one tensor at a time, in any order, split into shards with an index.

A safetensors file is an 8-byte header length, a JSON header naming each
tensor's dtype, shape and byte range, then the tensors' bytes. Every range is
known from the shapes and dtypes alone, so the header is written first and
each tensor goes to its own range as it arrives: no more than one tensor is
ever held, whatever order the source yields them in.

Shards follow the Hugging Face convention: tensors in name order fill
`model-0000i-of-0000n.safetensors` up to a byte budget (a tensor larger than
the budget gets a shard of its own), and `model.safetensors.index.json` maps
each name to its file. One shard is written as plain `model.safetensors`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Iterable, Mapping

import jax.numpy as jnp
import numpy as np

from jaxspec.errors import InputError

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# What transformers' save_pretrained split at for years ("5GB"); large checkpoints on the Hub use it.
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9

_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int32": "I32", "int64": "I64"}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def stored_dtype(code: str) -> np.dtype:
    """A safetensors dtype code ("F32", "BF16", ...) as a numpy dtype (bfloat16 as JAX's)."""
    names = {v: k for k, v in _DTYPES.items()}
    if code not in names:
        raise ValueError(f"unsupported safetensors dtype {code}")
    return jnp.dtype(names[code])


def parse_size(text: str) -> int:
    """'5GB' → 5_000_000_000 (decimal units as Hugging Face reads them; KiB, MiB, GiB binary)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS or float(match.group(1)) <= 0:
        raise InputError(f"bad size {text!r}: expected a positive number with an optional unit (KB, MB, GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def shard_plan(entries: Iterable[Entry], max_shard_bytes: int) -> list[list[Entry]]:
    """Entries in name order, cut into shards of at most max_shard_bytes (one oversized tensor alone)."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for e in sorted(entries, key=lambda e: e.name):
        if shards[-1] and size + e.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    return shards


def _file_names(count: int) -> list[str]:
    if count == 1:
        return [WEIGHTS_FILE]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def _header(entries: list[Entry], metadata: Mapping[str, str]) -> tuple[bytes, dict[str, int]]:
    """The padded header and each tensor's offset from the start of the data."""
    header, offsets, at = {"__metadata__": dict(metadata)}, {}, 0
    for e in entries:
        if e.dtype.name not in _DTYPES:
            raise ValueError(f"safetensors cannot hold tensor {e.name} of dtype {e.dtype.name}")
        header[e.name] = {"dtype": _DTYPES[e.dtype.name], "shape": list(e.shape), "data_offsets": [at, at + e.nbytes]}
        offsets[e.name] = at
        at += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the reference writer pads it
    return len(raw).to_bytes(8, "little") + raw, offsets


def write_safetensors(
    out_dir: Path, entries: Iterable[Entry], tensors: Iterable[tuple[str, np.ndarray]],
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Writes every entry's tensor, taken from `tensors` ((name, array) pairs, any order, each name once),
    into shards under out_dir (with an index when there are several). Returns the file names."""
    metadata = {"format": "pt"} if metadata is None else metadata  # what transformers expects of a torch file
    shards = shard_plan(entries, max_shard_bytes)
    names = _file_names(len(shards))
    where: dict[str, tuple[Path, Entry, int]] = {}
    for file_name, shard in zip(names, shards):
        head, offsets = _header(shard, metadata)
        path = out_dir / file_name
        with open(path, "wb") as f:
            f.write(head)
            f.truncate(len(head) + sum(e.nbytes for e in shard))
        where.update({e.name: (path, e, len(head) + offsets[e.name]) for e in shard})
    written = set()
    for name, value in tensors:
        path, entry, at = where[name]
        value = np.asarray(value)
        if value.shape != entry.shape or value.dtype != entry.dtype or name in written:
            raise ValueError(f"tensor {name}: got {value.dtype}{list(value.shape)} (again: {name in written}), "
                             f"planned {entry.dtype}{list(entry.shape)}")
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(np.ascontiguousarray(value).reshape(-1).view(np.uint8))  # the array's own bytes, not a copy
        written.add(name)
    if len(written) != len(where):
        raise ValueError(f"tensors never written: {sorted(set(where) - written)[:3]}")
    if len(names) > 1:
        index = {"metadata": {"total_size": sum(e.nbytes for s in shards for e in s)},
                 "weight_map": {e.name: f for f, s in zip(names, shards) for e in s}}
        (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return names
