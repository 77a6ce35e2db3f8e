"""Draft heads directories (Medusa or Hydra heads, an EAGLE-style drafter, a Kangaroo exit adapter): config.json (models.medusa.HeadsConfig) and
heads.safetensors, next to a target.

The config names the target the heads were trained for (hidden size,
vocabulary, layer count); loading checks them against the target given, so
heads trained for another model fail with one line rather than drafting
garbage. A reduced draft vocabulary is saved as the tensor `draft_ids`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.flax import save_file

from jaxspec.atomic import atomic_directory
from jaxspec.errors import CheckpointError
from jaxspec.hf_io import check_tensor_names, flatten, read_json, unflatten
from models.eagle import EAGLE, EagleHeads
from models.early_exit import KANGAROO, ExitAdapter
from models.hydra import HYDRA, HydraHeads
from models.medusa import MEDUSA, HeadsConfig, MedusaHeads

HEADS_FILE = "heads.safetensors"
CONFIG_FILE = "config.json"
DRAFT_IDS = "draft_ids"
KINDS = {MEDUSA: MedusaHeads, HYDRA: HydraHeads, EAGLE: EagleHeads, KANGAROO: ExitAdapter}


@dataclasses.dataclass
class LoadedHeads:
    heads: Any  # one of KINDS
    params: dict
    draft_ids: jnp.ndarray | None  # [N] int32 target ids, or None for the whole vocabulary
    source: Path


def target_fields(model) -> dict:
    """The target facts a heads config records: what the heads' shapes depend on."""
    d = model.describe()
    return {"hidden_size": d["hidden_size"], "vocab_size": d["vocab_size"], "target_layers": d["layers"]}


def check_target(config: HeadsConfig, model, where) -> None:
    for name, value in target_fields(model).items():
        if getattr(config, name) != value:
            raise CheckpointError(
                f"{where}: heads trained for a target with {name.replace('_', ' ')} {getattr(config, name)}, "
                f"but this target has {value}"
            )


def check_adapter(config: HeadsConfig, where) -> None:
    """An exit adapter's own fields: an exit layer inside the target, heads that divide the hidden size."""
    if config.exit_layer is None or not 1 <= config.exit_layer < config.target_layers:
        raise CheckpointError(
            f"{where}: exit layer must be in [1, {config.target_layers}) for a {config.target_layers}-layer target, "
            f"got {config.exit_layer}"
        )
    check_attention_heads(config, where, required=True)


def check_attention_heads(config: HeadsConfig, where, required: bool) -> None:
    """An attention layer's heads (an exit adapter's, Hydra++'s prefix layer's, an EAGLE drafter's) divide the
    hidden size."""
    heads = config.attention_heads
    if (required and not heads) or (heads is not None and (heads < 1 or config.hidden_size % heads)):
        raise CheckpointError(f"{where}: attention heads {heads} must divide the hidden size {config.hidden_size}")


def save_heads(out_dir: Path, heads, params, draft_ids=None) -> None:
    """Writes the directory atomically (a temporary name, then a rename)."""
    tensors = {heads.tensor_name(path): jnp.asarray(leaf, jnp.float32) for path, leaf in flatten(params).items()}
    if draft_ids is not None:
        tensors[DRAFT_IDS] = jnp.asarray(draft_ids, jnp.int32)
    with atomic_directory(Path(out_dir)) as tmp:
        save_file(tensors, str(tmp / HEADS_FILE), metadata={"format": "jaxspec-heads"})
        (tmp / CONFIG_FILE).write_text(json.dumps(heads.config.to_json(), indent=2) + "\n")


def load_heads(path: str | Path, target_model, dtype: str = "float32") -> LoadedHeads:
    """Heads for `target_model`, or a CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such heads directory")
    raw = read_json(path / CONFIG_FILE, "heads config")
    try:
        config = HeadsConfig.from_json(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: not a heads config ({e})") from None
    if config.kind not in KINDS:
        raise CheckpointError(f"{path}: unknown heads kind {config.kind!r} (known: {', '.join(sorted(KINDS))})")
    check_target(config, target_model, path)
    if config.kind == KANGAROO:
        check_adapter(config, path)
    else:
        check_attention_heads(config, path, required=config.kind == EAGLE)
    heads = KINDS[config.kind](config, dtype)
    weights = path / HEADS_FILE
    if not weights.exists():
        raise CheckpointError(f"{path}: no {HEADS_FILE}")
    abstract = jax.eval_shape(heads.init_params, jax.random.key(0))
    shapes = {p: leaf.shape for p, leaf in flatten(abstract).items()}
    expected = {heads.tensor_name(p): p for p in shapes}
    try:
        with safe_open(str(weights), framework="numpy") as f:
            names = set(f.keys())
            check_tensor_names(weights, missing=set(expected) - names, extra=names - set(expected) - {DRAFT_IDS})
            flat = {}
            for name, p in expected.items():
                tensor = f.get_tensor(name)
                want = shapes[p]
                if tuple(tensor.shape) != tuple(want):
                    raise CheckpointError(f"{weights}: tensor {name} has shape {list(tensor.shape)}, expected {list(want)}")
                flat[p] = jnp.asarray(tensor, jnp.float32)
            ids = f.get_tensor(DRAFT_IDS) if DRAFT_IDS in names else None
    except SafetensorError as e:
        raise CheckpointError(f"{weights}: unreadable ({e})") from None
    if ids is not None:
        ids = np.asarray(ids)
        if ids.ndim != 1 or len(ids) != config.draft_vocab or ids.min() < 0 or ids.max() >= config.vocab_size:
            raise CheckpointError(f"{weights}: draft_ids must be {config.draft_vocab} ids below {config.vocab_size}")
        ids = jnp.asarray(ids, jnp.int32)
    elif config.draft_vocab is not None:
        raise CheckpointError(f"{weights}: config.json says draft_vocab {config.draft_vocab} but there are no draft_ids")
    return LoadedHeads(heads, unflatten(flat), ids, path)
