"""Random models of jaxspec's own families for engine tests: real attention, real caches, no checkpoint.

Kernels and embeddings are scaled up so that logits spread wide (greedy tests
have no near-ties) or, with a small scale, stay soft (sampling tests visit
many outcomes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from models import CausalLM, build_model, from_hf_config

VOCAB = 64


def _scaled(params, scale: float):
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x * scale if path[-1].key in ("kernel", "embedding") else x, params
    )


def random_model(
    seed: int, layers: int, hidden: int, heads: int, kv_heads: int, window=None, scale=12.0, vocab: int = VOCAB
):
    """A random Llama (or, with a sliding window, Mistral) decoder-only model and its params."""
    cfg = {
        "architectures": ["MistralForCausalLM" if window else "LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "max_position_embeddings": 512,
        "sliding_window": window,
    }
    model = CausalLM(from_hf_config(cfg))
    return model, _scaled(model.init_params(jax.random.key(seed)), scale)


def random_t5gemma(seed: int, layers: int, scale: float, vocab: int = 48):
    """A random T5Gemma (sliding windows of 4, soft-caps, GQA) and its params; bos 1, eos 2, pad 0."""
    stack = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128, sliding_window=4,
        attn_logit_softcapping=20.0, final_logit_softcapping=15.0, query_pre_attn_scalar=8,
    )
    cfg = {"architectures": ["T5GemmaForConditionalGeneration"], "encoder": stack, "decoder": stack,
           "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    model = build_model(cfg)
    return model, _scaled(model.init_params(jax.random.key(seed)), scale)


def noisy_copy(params, seed: int, noise: float = 0.3):
    """A draft that agrees with the target often but not always."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return tree.unflatten([x + noise * jnp.std(x) * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def perturbed(params, seed: int, scale: float):
    """params plus N(0, scale^2) noise everywhere, zero-initialised weights included (an adapter or head
    that training moved off its identity start)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return tree.unflatten([x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
