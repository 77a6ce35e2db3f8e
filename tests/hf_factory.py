"""Tiny random Hugging Face models of every supported family, saved with save_pretrained.

Weights are drawn with a larger std than Hugging Face's default so that the
logits are far from uniform and greedy text is not degenerate.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from tests.tokenizer_factory import write_tokenizer

VOCAB = 96  # small, and matched by the test tokenizer

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# family → (config class, model class, options that bite)
FAMILIES = {
    "llama": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        dict(
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=10000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            ),
            head_dim=24,
            tie_word_embeddings=False,
        ),
    ),
    "llama_linear_mqa_tied": (
        transformers.LlamaConfig,
        transformers.LlamaForCausalLM,
        dict(
            rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0),
            num_key_value_heads=1,
            tie_word_embeddings=True,
        ),
    ),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(sliding_window=5)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(tie_word_embeddings=True)),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(head_dim=32)),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM, dict(head_dim=16, num_key_value_heads=1)),
    "gemma2": (
        transformers.Gemma2Config,
        transformers.Gemma2ForCausalLM,
        dict(
            head_dim=16,
            sliding_window=4,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            query_pre_attn_scalar=24,
            num_hidden_layers=4,
            # Tied Gemma 2/3 heads on random weights just echo the input token.
            tie_word_embeddings=False,
        ),
    ),
    "gemma3": (
        transformers.Gemma3TextConfig,
        transformers.Gemma3ForCausalLM,
        dict(
            head_dim=16,
            sliding_window=4,
            query_pre_attn_scalar=24,
            num_hidden_layers=4,
            layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
            final_logit_softcapping=10.0,
            tie_word_embeddings=False,
        ),
    ),
}


def make_hf_model(family: str, out: Path, seed: int = 0, std: float = 0.3, dtype=torch.float32, **overrides):
    """Builds, saves (config.json, model.safetensors, tokenizer.json) and returns a random HF model."""
    config_cls, model_cls, opts = FAMILIES[family]
    config = config_cls(**{**BASE, **opts, **overrides})
    config.initializer_range = std
    torch.manual_seed(seed)
    model = model_cls(config).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out)
    write_tokenizer(out, config.vocab_size)
    return model
