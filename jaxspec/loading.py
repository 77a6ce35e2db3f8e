"""Load and save models by path: a Hugging Face directory, a jaxspec checkpoint or a GGUF file, interchangeably."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxspec import gguf, hf_io, orbax_io
from jaxspec.errors import CheckpointError, UnsupportedModelError
from jaxspec.sharding import ShardingPlan, parse_mesh
from jaxspec.tokenizer import ByteTokenizer, Tokenizer
from models import ModelConfigError, build_model

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass
class LoadedModel:
    model: Any  # a model object of models/protocol.py: CausalLM or an encoder-decoder model
    params: dict
    hf_config: dict
    source: Path
    format: str  # "hf" | "jaxspec" | "gguf"
    tokenizer: Tokenizer | ByteTokenizer | None
    eos_ids: tuple[int, ...]
    # tokenizer.json, generation_config.json, ... by name: what a converted checkpoint carries along.
    side_files: dict[str, bytes] = dataclasses.field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return sum(x.size for x in jax.tree_util.tree_leaves(self.params))


def _check_dtype(dtype: str | None) -> None:
    if dtype is not None and dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")


def check_output(source: Path, out: Path, to: str, dtype: str | None) -> None:
    """What a writer of `source` to `out` refuses before it reads anything: an unknown dtype or format, or an
    output that would overwrite the source."""
    _check_dtype(dtype)
    if to not in ("hf", "jaxspec"):
        raise CheckpointError(f"unknown output format {to!r} (choose hf or jaxspec)")
    if Path(out).resolve() == Path(source).resolve():
        raise CheckpointError(f"{out}: output would overwrite the source checkpoint")


def read_model_config(path: Path, dtype: str = "float32"):
    """(config.json as a dict, the model object it describes)."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    hf_config = hf_io.read_json(path / "config.json", "model config")
    try:
        return hf_config, build_model(hf_config, dtype)
    except ModelConfigError as e:
        raise UnsupportedModelError(f"{path}: {e}") from None


def _eos_ids(path: Path, model, side_files: dict[str, bytes]) -> tuple[int, ...]:
    ids = set(model.config.eos_token_ids)
    if "generation_config.json" in side_files:
        eos = hf_io.parse_json(side_files["generation_config.json"], path / "generation_config.json").get("eos_token_id")
        ids.update([eos] if isinstance(eos, int) else (eos or []))
    return tuple(sorted(ids))


def load(path: str | Path, dtype: str | None = "float32", mesh: str | ShardingPlan | None = None) -> LoadedModel:
    """Loads a model. `dtype` sets the compute and parameter dtype; None keeps the stored one
    (float32 for a GGUF file, whose quantized tensors are dequantized).

    `mesh` ("data=2,tensor=4" or a ShardingPlan) places the params on a device mesh as they load. A
    safetensors checkpoint (single file or sharded index) is read slice by slice and a jaxspec checkpoint
    restored shard by shard, each process reading only the blocks its own devices hold; a GGUF file's
    tensors are dequantized one at a time, each placed at once (at most one whole tensor held besides the
    shards)."""
    _check_dtype(dtype)
    path = Path(path)
    if gguf.is_gguf(path):
        hf_config, model, params, side = gguf.load_gguf(path, dtype or "float32", functools.partial(_shardings, mesh))
        return _loaded(model, params, hf_config, path, "gguf", side)
    hf_config, model = read_model_config(path, dtype or "float32")
    plan = mesh_plan(model, mesh)
    cast = jnp.dtype(dtype) if dtype is not None else None
    # What the checkpoint holds can settle what the config leaves open (a T5's tied head).
    if orbax_io.is_jaxspec_dir(path):
        fmt = "jaxspec"
        # On a mesh, the names and shapes come from orbax's metadata and each process restores its shards.
        stored = orbax_io.restore_params(path) if plan is None else orbax_io.stored_shapes(path)
        model = model.for_checkpoint({model.hf_tensor_name(p) for p in hf_io.flat_paths(stored)})
        abstract = jax.eval_shape(model.init_params, jax.random.PRNGKey(0))
        if plan is None:
            params = orbax_io.checked_params(path, stored, abstract, cast)
        else:
            orbax_io.check_params(path, stored, abstract)
            params = orbax_io.restore_sharded(path, stored, plan.param_shardings(stored), cast)
    else:
        fmt = "hf"
        model = model.for_checkpoint(hf_io.tensor_names(path))
        abstract = jax.eval_shape(model.init_params, jax.random.PRNGKey(0))
        if plan is None:
            params = hf_io.load_params(path, model, abstract, cast)
        else:
            params = hf_io.load_params_sharded(path, model, abstract, plan.param_shardings(abstract), cast)
    if dtype is None:
        model = dataclasses.replace(model, dtype=hf_io.dtype_name(params))
    return _loaded(model, params, hf_config, path, fmt, hf_io.read_side_files(path))


def mesh_plan(model, mesh: str | ShardingPlan | None) -> ShardingPlan | None:
    """The plan that places `model` on `mesh` ("data=2,tensor=4" or a ShardingPlan), with its head counts;
    None for no mesh."""
    if mesh is None:
        return None
    return (mesh if isinstance(mesh, ShardingPlan) else ShardingPlan(parse_mesh(mesh))).for_model(model)


def _shardings(mesh: str | ShardingPlan | None, model, abstract_params):
    plan = mesh_plan(model, mesh)
    return None if plan is None else plan.param_shardings(abstract_params)


def _loaded(model, params, hf_config: dict, path: Path, fmt: str, side: dict[str, bytes]) -> LoadedModel:
    tok = side.get("tokenizer.json")
    if getattr(model, "byte_level", False):  # ids are bytes: no tokenizer file
        tokenizer = ByteTokenizer(model.vocab_size, frozenset(model.config.eos_token_ids))
    else:
        tokenizer = Tokenizer.from_json(tok, str(path / "tokenizer.json")) if tok is not None else None
    return LoadedModel(model, params, hf_config, path, fmt, tokenizer, _eos_ids(path, model, side), side)


def save(
    loaded: LoadedModel, out: str | Path, to: str = "jaxspec", dtype: str | None = None, extra_files: dict[str, bytes] | None = None
) -> None:
    """Writes `loaded` as a jaxspec checkpoint (to="jaxspec") or a Hugging Face directory (to="hf"), with its
    side files and `extra_files` (name → content) written inside the same atomic rename."""
    out = Path(out)
    check_output(loaded.source, out, to, dtype)
    side = {**loaded.side_files, **(extra_files or {})}
    params = loaded.params
    if dtype is not None:
        params = jax.tree_util.tree_map(lambda x: x.astype(jnp.dtype(dtype)), params)
    if to == "hf":
        hf_io.save_hf(out, loaded.model, params, loaded.hf_config, side, hf_io.dtype_name(params))
    else:
        orbax_io.save_jaxspec(out, params, loaded.hf_config, side)
