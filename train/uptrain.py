"""Uptraining: a Block Transformer initialised from a trained decoder-only (vanilla) model.

The vanilla model's layers are split between the two decoders: layers
[0, split) become the block decoder, layers [split, N) the token decoder,
both at the vanilla width. The token decoder takes the vanilla token
embedding and head. The block embedder is the projection variant over the
vanilla token embedding, its projection initialised to average the block's L
token embeddings, so the block decoder starts from inputs on the scale its
layers were trained on. Only the start block and the context-to-prefix
projection start from random values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from models import CausalLM, build_model
from models.block_config import block_hf_config
from train.errors import TrainingError

_COPIED_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "vocab_size")


def uptrain_init(vanilla, block_length: int, split: int | None, injection: str, num_prefix: int, seed: int):
    """(config.json dict, params) of a Block Transformer built from `vanilla` (a jaxspec.loading.LoadedModel)."""
    model = vanilla.model
    if not isinstance(model, CausalLM):
        arch = (vanilla.hf_config.get("architectures") or [vanilla.hf_config.get("model_type")])[0]
        raise TrainingError(f"{vanilla.source}: uptraining splits a decoder-only model's layers, but this is a {arch}")
    c = model.config
    if c.model_type != "llama" or c.rope.kind != "default" or any(w is not None for w in c.layer_windows):
        raise TrainingError(
            f"{vanilla.source}: uptraining reuses Llama-style layers (the Block Transformer's), not {c.model_type}'s"
        )
    split = c.num_layers // 2 if split is None else split
    if not 1 <= split < c.num_layers:
        raise TrainingError(f"--split must leave layers to both decoders: 1 <= split < {c.num_layers}, got {split}")

    def sizes(layers):
        return {
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": layers,
            "num_attention_heads": c.num_heads,
            "num_key_value_heads": c.num_kv_heads,
        }

    cfg = block_hf_config(
        block_length, sizes(split), sizes(c.num_layers - split), c.max_position_embeddings, c.rope.theta,
        c.tie_word_embeddings, embedder="projection", injection=injection, num_prefix=num_prefix,
    )
    cfg["embedder_hidden_size"] = c.hidden_size
    cfg["rms_norm_eps"] = c.rms_norm_eps
    cfg.update({k: vanilla.hf_config[k] for k in _COPIED_KEYS if k in vanilla.hf_config})
    block = build_model(cfg)
    params = block.init_params(jax.random.PRNGKey(seed))
    src = vanilla.params
    embed = src["embed_tokens"]["embedding"]
    params["embedder"]["embedding"] = embed
    eye = jnp.eye(c.hidden_size, dtype=embed.dtype) / block_length
    params["embedder"]["embedder_proj"]["kernel"] = jnp.concatenate([eye] * block_length, axis=0)
    params["block_decoder"] = {f"layers_{i}": src[f"layers_{i}"] for i in range(split)} | {"norm": src["norm"]}
    params["token_decoder"] = {
        f"layers_{i - split}": src[f"layers_{i}"] for i in range(split, c.num_layers)
    } | {"norm": src["norm"]}
    params["embed_tokens"]["embedding"] = embed
    if not c.tie_word_embeddings:
        params["lm_head"] = src["lm_head"]
    return cfg, params
