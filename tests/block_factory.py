"""Tiny random Block Transformers (models/block_transformer.py), for tests."""

from __future__ import annotations

import jax

from models import build_model
from models.block_config import block_hf_config

BLOCK_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
TOKEN_SIZES = dict(hidden_size=16, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
# (embedder, context injection, tied embeddings): the variants every test covers.
VARIANTS = {
    "lookup-prefix": ("lookup", "prefix", False),
    "projection-sum-tied": ("projection", "sum", True),
}


def block_config(variant: str = "lookup-prefix", block_length: int = 4, vocab: int = 61, max_positions: int = 128) -> dict:
    embedder, injection, tied = VARIANTS[variant]
    cfg = block_hf_config(block_length, BLOCK_SIZES, TOKEN_SIZES, max_positions, tie_embeddings=tied,
                          embedder=embedder, injection=injection, num_prefix=2)
    return {**cfg, "vocab_size": vocab, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def tiny_block(variant: str = "lookup-prefix", seed: int = 0, **kwargs):
    """(model, params, config.json dict) of a random Block Transformer."""
    cfg = block_config(variant, **kwargs)
    model = build_model(cfg)
    return model, model.init_params(jax.random.PRNGKey(seed)), cfg
