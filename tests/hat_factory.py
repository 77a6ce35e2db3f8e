"""Tiny random HATs (models/hat.py), for tests."""

from __future__ import annotations

import jax

from models import build_model
from models.hat_config import hat_hf_config

BYTE_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
WORD_SIZES = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def hat_config(max_word_bytes: int = 6, sliding_window: int = 8, max_positions: int = 256) -> dict:
    """A small word cap and window so that tests cross both."""
    return hat_hf_config(BYTE_SIZES, WORD_SIZES, BYTE_SIZES, max_positions, sliding_window, max_word_bytes, 4)


def tiny_hat(seed: int = 0, **kwargs):
    """(model, params, config.json dict) of a random HAT."""
    cfg = hat_config(**kwargs)
    model = build_model(cfg)
    return model, model.init_params(jax.random.PRNGKey(seed)), cfg
