"""What the two-level models (Block Transformer, HAT) share: decoder stacks over embeddings, their configs
read from a sub-dictionary of config.json, and the small array helpers of their caches and names."""

from __future__ import annotations

import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.config import DecoderConfig, ModelConfigError, from_hf_config
from models.decoder import decoder_stack
from models.kv_cache import KVCache

STACK_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")


class Stack(nn.Module):
    """A decoder stack over embeddings (layers_i, norm): the decoder-only layer code, no embedding or head."""

    config: DecoderConfig
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, positions, cache: KVCache):
        hidden, cache, _ = decoder_stack(self.config, self.dtype, x, positions, cache)
        return hidden, cache


def stack_config(cfg: Mapping[str, Any], which: str, vocab: int, positions: int, window: int | None = None) -> DecoderConfig:
    """The DecoderConfig of the stack whose sizes are config.json's `which` sub-dictionary (Llama-style; with
    `window`, Mistral-style sliding-window layers), sharing the top level's RoPE, norm and activation."""
    sub = cfg.get(which)
    if not isinstance(sub, Mapping):
        raise ModelConfigError(f"config.json lacks the {which!r} sizes")
    missing = [k for k in STACK_KEYS if k not in sub]
    if missing:
        raise ModelConfigError(f"{which} lacks required field {missing[0]!r}")
    stack = {
        "architectures": ["MistralForCausalLM" if window else "LlamaForCausalLM"],
        "vocab_size": vocab,
        "max_position_embeddings": positions,
        "rope_theta": cfg.get("rope_theta", 10000.0),
        "rms_norm_eps": cfg.get("rms_norm_eps", 1e-5),
        "hidden_act": cfg.get("hidden_act", "silu"),
        **({"sliding_window": window} if window else {}),
        **{k: sub[k] for k in STACK_KEYS},
    }
    try:
        return from_hf_config(stack)
    except ModelConfigError as e:
        raise ModelConfigError(f"{which}: {e}") from None


def stack_sizes(s: DecoderConfig) -> dict:
    """A stack's sizes for `describe`."""
    return {"layers": s.num_layers, "hidden_size": s.hidden_size, "heads": s.num_heads, "kv_heads": s.num_kv_heads}


def dotted_name(path: tuple[str, ...], kept_leaves: tuple[str, ...]) -> str:
    """`block_decoder/layers_3/self_attn/q_proj/kernel` → `block_decoder.layers.3.self_attn.q_proj.weight`;
    a leaf in kept_leaves (a bias, a learned vector) keeps its own name."""
    *modules, leaf = path
    parts = []
    for m in modules:
        parts.extend(m.rsplit("_", 1) if re.fullmatch(r"layers_\d+", m) else [m])
    parts.append(leaf if leaf in kept_leaves else "weight")
    return ".".join(parts)


def scratch_cache(stack: DecoderConfig, batch: int, length: int, dtype) -> KVCache:
    """A throwaway cache for one teacher-forced pass of a stack."""
    return KVCache.zeros(stack.num_layers, batch, length, stack.num_kv_heads, stack.head_dim, dtype)


def arange_rows(b: int, n: int) -> jax.Array:
    """Positions 0 .. n-1 for each of b rows, [b, n] int32."""
    return jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))


def select_rows(rows, new, old):
    """Per row b: new where rows[b], old otherwise, for arrays of any rank with batch first."""
    return jnp.where(rows.reshape(rows.shape + (1,) * (new.ndim - 1)), new, old)
