"""Export trained params as a Hugging Face directory that jaxspec and transformers both load."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxspec import hf_io
from models import build_model
from train.bpe import TOKENIZER_CONFIG, TOKENIZER_FILE
from train.errors import TrainingError

EXPORT_DTYPES = ("float32", "bfloat16")


def export_hf(out_dir: Path, params, hf_config: dict, tokenizer_file: Path | None, dtype: str) -> None:
    """config.json, model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json (a
    byte-level model trained on a byte dataset, tokenizer_file None, has no tokenizer files)."""
    if dtype not in EXPORT_DTYPES:
        raise TrainingError(f"unknown export dtype {dtype!r} (choose from {', '.join(EXPORT_DTYPES)})")
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.dtype(dtype)), params)
    generation = {
        "bos_token_id": hf_config.get("bos_token_id"),
        "eos_token_id": hf_config.get("eos_token_id"),
        "pad_token_id": hf_config.get("pad_token_id"),
    }
    side = {"generation_config.json": (json.dumps(generation, indent=2) + "\n").encode()}
    if tokenizer_file is not None:
        side[TOKENIZER_FILE] = Path(tokenizer_file).read_bytes()
        side["tokenizer_config.json"] = (json.dumps(TOKENIZER_CONFIG, indent=2) + "\n").encode()
    hf_io.save_hf(Path(out_dir), build_model(hf_config), params, hf_config, side, dtype)
