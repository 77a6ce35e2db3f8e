"""Model shapes the benches build with random weights (speed does not depend on the values)."""

from __future__ import annotations

# Realistic small-Llama shapes (head_dim 64, MLP ≈ 2.7 × hidden, 32k vocab).
# Heads are tied so the vocabulary matrix, read once per step by the head, is
# counted once; ~30M and ~100M are then the parameters read per step.
LLAMA_SIZES = {
    "30m": dict(hidden_size=384, num_hidden_layers=10, num_attention_heads=6, intermediate_size=1024),
    "100m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=2048),
}
LLAMA_COMMON = dict(
    vocab_size=32000,
    tie_word_embeddings=True,
    max_position_embeddings=2048,
    # No special tokens: neither engine can stop early, so both emit exactly --new-tokens.
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

# Hugging Face config.json dictionaries, for jaxspec's own model classes.
HF_CONFIGS = {
    # The reference model's config.json as its GGUF converts (docs/gguf.md).
    "gemma3-270m": dict(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", hidden_size=640, intermediate_size=2048,
        num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
        rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, sliding_window=512,
        sliding_window_pattern=6, max_position_embeddings=32768, vocab_size=262144, tie_word_embeddings=True,
    ),
    "llama-100m": dict(architectures=["LlamaForCausalLM"], **LLAMA_COMMON, **LLAMA_SIZES["100m"]),
    # Llama 3.2 1B's shapes.
    "llama-1b": dict(
        architectures=["LlamaForCausalLM"], hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256, rope_theta=500_000.0,
        max_position_embeddings=131072, tie_word_embeddings=True, rms_norm_eps=1e-5,
    ),
    # Gemma 3 27B's text decoder and Llama 3 70B's shapes, for the memory plans of docs (bench/memory_plan.py).
    "gemma3-27b": dict(
        architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", hidden_size=5376, intermediate_size=21504,
        num_hidden_layers=62, num_attention_heads=32, num_key_value_heads=16, head_dim=128, query_pre_attn_scalar=168,
        rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, sliding_window=1024,
        sliding_window_pattern=6, max_position_embeddings=131072, vocab_size=262208, tie_word_embeddings=True,
    ),
    "llama3-70b": dict(
        architectures=["LlamaForCausalLM"], hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, head_dim=128, vocab_size=128256, rope_theta=500_000.0,
        max_position_embeddings=8192, tie_word_embeddings=False, rms_norm_eps=1e-5,
    ),
}
