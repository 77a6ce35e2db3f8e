"""Decoder-only → encoder-decoder adaptation (Encoder-Decoder Gemma / T5Gemma).

`adapt(src, out)` turns a Gemma 2 decoder-only checkpoint into a T5Gemma one
that both jaxspec and transformers load: both stacks are the source's
architecture (the encoder made bidirectional, which is what T5Gemma's encoder
is), every encoder and decoder layer starts from the source layer of the same
index, each decoder layer's cross-attention (and its pre/post norms) starts
from that layer's self-attention, and the embedding is copied to both stacks.
The result is the starting point of continued pretraining
(`jaxspec-train prefix-lm --init OUT`).

Only Gemma 2 maps onto T5Gemma's blocks exactly: Gemma 3 adds q/k norms and a
second RoPE for its sliding layers, which T5Gemma's Gemma 2 blocks do not have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import jax
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxspec import hf_io
from jaxspec.errors import CheckpointError, UnsupportedModelError
from jaxspec.loading import load
from models import CausalLM, DecoderConfig, RopeConfig, build_model

SOURCE_ARCHITECTURE = "Gemma2ForCausalLM"

# Per layer: the T5Gemma module ← the Gemma 2 module of the same layer it starts from.
ENCODER_LAYER = {
    "pre_self_attn_layernorm": "input_layernorm",
    "self_attn": "self_attn",
    "post_self_attn_layernorm": "post_attention_layernorm",
    "pre_feedforward_layernorm": "pre_feedforward_layernorm",
    "mlp": "mlp",
    "post_feedforward_layernorm": "post_feedforward_layernorm",
}
DECODER_LAYER = {
    **ENCODER_LAYER,
    "pre_cross_attn_layernorm": "input_layernorm",
    "cross_attn": "self_attn",
    "post_cross_attn_layernorm": "post_attention_layernorm",
}


def source_path(path: tuple[str, ...]) -> tuple[str, ...]:
    """The decoder-only param path that a T5Gemma param path is initialised from.

    encoder|decoder/layers_i/<module>/...  ← layers_i/<ENCODER_LAYER|DECODER_LAYER[module]>/...
    encoder|decoder/embed_tokens|norm/...  ← embed_tokens|norm/...
    lm_head/out_proj/kernel                ← lm_head/kernel (an untied head)
    """
    if path[0] == "lm_head":
        return ("lm_head", *path[2:])
    stack, module, *rest = path
    if module.startswith("layers_"):
        table = ENCODER_LAYER if stack == "encoder" else DECODER_LAYER
        return (module, table[rest[0]], *rest[1:])
    return (module, *rest)


def _rope_parameters(rope: RopeConfig) -> dict:
    out: dict[str, Any] = {"rope_type": rope.kind, "rope_theta": rope.theta}
    if rope.kind in ("linear", "llama3"):
        out["factor"] = rope.factor
    if rope.kind == "llama3":
        out.update(
            low_freq_factor=rope.low_freq_factor,
            high_freq_factor=rope.high_freq_factor,
            original_max_position_embeddings=rope.original_max_position_embeddings,
        )
    return out


def _stack_config(c: DecoderConfig, src: Mapping[str, Any], is_decoder: bool) -> dict:
    """A T5Gemma sub-config describing the same Gemma 2 block as the source's (parsed) config."""
    windows = {w for w in c.layer_windows if w is not None}
    stack = {
        "model_type": "t5_gemma_module",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_activation": c.activation,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "attention_bias": c.qkv_bias,
        # The same number our parser turned into the attention scale (head_dim when absent).
        "query_pre_attn_scalar": src.get("query_pre_attn_scalar") or c.head_dim,
        "sliding_window": windows.pop() if windows else None,
        "layer_types": ["full_attention" if w is None else "sliding_attention" for w in c.layer_windows],
        "rope_parameters": _rope_parameters(c.rope),
        "attn_logit_softcapping": c.attn_softcap,
        "final_logit_softcapping": c.final_softcap,
        "bos_token_id": src.get("bos_token_id"),
        "eos_token_id": src.get("eos_token_id"),
        "pad_token_id": src.get("pad_token_id"),
        "is_decoder": is_decoder,
    }
    if is_decoder:
        stack["cross_attention_hidden_size"] = c.hidden_size
    return stack


def t5gemma_config(c: DecoderConfig, src: Mapping[str, Any]) -> dict:
    """The config.json of the T5Gemma that `adapt` builds from a Gemma 2 config (parsed and raw)."""
    return {
        "architectures": ["T5GemmaForConditionalGeneration"],
        "model_type": "t5gemma",
        "is_encoder_decoder": True,
        "encoder": _stack_config(c, src, is_decoder=False),
        "decoder": _stack_config(c, src, is_decoder=True),
        "vocab_size": c.vocab_size,
        "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": src.get("bos_token_id"),
        "eos_token_id": src.get("eos_token_id"),
        "pad_token_id": src.get("pad_token_id"),
        "dropout_rate": 0.0,
        "attention_dropout": 0.0,
    }


def _source_config(lm, src: Path) -> DecoderConfig:
    model = lm.model
    if not isinstance(model, CausalLM):
        raise UnsupportedModelError(f"{src}: already an encoder-decoder model; adapt starts from a decoder-only Gemma 2")
    c = model.config
    if c.architecture == "Gemma3ForCausalLM":
        raise UnsupportedModelError(
            f"{src}: Gemma 3's q/k norms and local RoPE have no place in T5Gemma's Gemma 2 blocks; adapt needs a Gemma 2"
        )
    if c.architecture != SOURCE_ARCHITECTURE:
        raise UnsupportedModelError(f"{src}: adapt starts from a {SOURCE_ARCHITECTURE} checkpoint, not {c.architecture}")
    return c


def adapt(src: str | Path, out: str | Path, dtype: str | None = None) -> Path:
    """Writes the T5Gemma adapted from the decoder-only checkpoint at `src` to `out` (a Hugging Face
    directory: config.json, model.safetensors, tokenizer and generation files copied). `dtype` casts the
    weights; None keeps the stored dtype. The write is atomic: a failure leaves nothing at `out`."""
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise CheckpointError(f"{out}: output would overwrite the source checkpoint")
    lm = load(src, dtype)
    c = _source_config(lm, src)
    config = t5gemma_config(c, lm.hf_config)
    model = build_model(config, lm.model.dtype)
    source = flatten_dict(lm.params)
    target = flatten_dict(jax.eval_shape(model.init_params, jax.random.PRNGKey(0)))
    params = unflatten_dict({path: source[source_path(path)] for path in target})
    hf_io.save_hf(out, model, params, config, lm.side_files, hf_io.dtype_name(params))
    return out
