"""`jaxspec convert`: any checkpoint jaxspec reads, written as a Hugging Face directory or a jaxspec
checkpoint, one tensor at a time.

A source (a Hugging Face directory, a jaxspec checkpoint, a GGUF file) is opened as its model, config, side
files, every tensor's shape and stored dtype (headers and metadata only), and a stream that reads, checks
and yields one tensor at a time: a safetensors tensor read alone, an orbax tensor restored alone, a GGUF
tensor dequantized alone. A Hugging Face output writes each tensor into its place in the safetensors
shards as it arrives (jaxspec/safetensors_out.py), so the conversion holds one tensor, whatever the model's
size. A jaxspec output collects the tensors (cast one by one) into the tree orbax writes, and orbax copies
that tree once more while serializing it (bench/convert_memory.py): for a model larger than memory,
convert to a Hugging Face directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np

from jaxspec import gguf, hf_io, orbax_io
from jaxspec.loading import check_output, read_model_config
from jaxspec.safetensors_out import DEFAULT_MAX_SHARD_BYTES

ParamPath = tuple[str, ...]


@dataclasses.dataclass
class TensorSource:
    model: Any
    hf_config: dict
    side_files: dict[str, bytes]
    shapes: dict[ParamPath, jax.ShapeDtypeStruct]  # every param's shape and stored dtype, in the param's layout
    tensors: Callable[[], Iterator[tuple[ParamPath, Any]]]  # (path, array) one at a time, checked


def open_source(path: str | Path) -> TensorSource:
    """The checkpoint at `path`, opened for streaming: nothing but headers and metadata read yet."""
    path = Path(path)
    if gguf.is_gguf(path):
        cfg, model, side, abstract, present, read = gguf.open_gguf(path)  # dequantized to float32
        shapes = hf_io.flatten(abstract)
        return TensorSource(model, cfg, side, shapes,
                            lambda: hf_io.checked_tensors(str(path), model, abstract, present, read))
    hf_config, model = read_model_config(path)
    side = hf_io.read_side_files(path)
    if orbax_io.is_jaxspec_dir(path):
        stored = orbax_io.stored_shapes(path)
        model = model.for_checkpoint({model.hf_tensor_name(p) for p in hf_io.flat_paths(stored)})
        orbax_io.check_params(path, stored, jax.eval_shape(model.init_params, jax.random.PRNGKey(0)))
        shapes = hf_io.flatten(stored)
        return TensorSource(model, hf_config, side, shapes,
                            lambda: ((p, orbax_io.restore_one(path, p)) for p in shapes))
    present, read = hf_io.weight_reader(path)
    model = model.for_checkpoint(present)
    abstract = jax.eval_shape(model.init_params, jax.random.PRNGKey(0))
    stored = hf_io.stored_dtypes(path)
    shapes = {p: jax.ShapeDtypeStruct(x.shape, stored[model.hf_tensor_name(p)]) for p, x in hf_io.flatten(abstract).items()}
    return TensorSource(model, hf_config, side, shapes,
                        lambda: hf_io.checked_tensors(str(path), model, abstract, present, read))


def convert(src: str | Path, out: str | Path, to: str = "jaxspec", dtype: str | None = None,
            max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, extra_files: dict[str, bytes] | None = None) -> TensorSource:
    """Writes the checkpoint at `src` to `out` as `to` ("jaxspec" or "hf"), in `dtype` (None: as stored),
    atomically, with the source's side files and `extra_files` (name → content); a Hugging Face output
    splits into shards of at most max_shard_bytes. Returns the source."""
    check_output(Path(src), Path(out), to, dtype)
    source = open_source(src)
    cast = (lambda x: x) if dtype is None else (lambda x: np.asarray(x).astype(dtype))
    shapes = {p: jax.ShapeDtypeStruct(x.shape, dtype or x.dtype) for p, x in source.shapes.items()}
    tensors = ((p, cast(x)) for p, x in source.tensors())
    side = {**source.side_files, **(extra_files or {})}
    if to == "hf":
        hf_io.write_hf(Path(out), source.model, shapes, tensors, source.hf_config, side, hf_io.dtype_name(shapes),
                       max_shard_bytes)
    else:
        orbax_io.save_jaxspec(Path(out), hf_io.unflatten({p: np.asarray(x) for p, x in tensors}), source.hf_config, side)
    return source
