"""Model configs for training: a Llama-style (or Block Transformer) config.json dict from flags or a JSON file.

The config is kept as the Hugging Face dict (what the exported config.json
will hold); models.from_hf_config checks it. Vocabulary size and special ids
come from the dataset so that model and tokenizer always agree.
"""

from __future__ import annotations

import json
from pathlib import Path

from models import ModelConfigError, build_model
from train.errors import TrainingError


def llama_config(
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    max_positions: int,
    rope_theta: float = 10000.0,
    tie_embeddings: bool = False,
) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": rope_theta,
        "hidden_act": "silu",
        "tie_word_embeddings": tie_embeddings,
    }


def read_config_file(path: Path) -> dict:
    try:
        cfg = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TrainingError(f"{path}: no such model config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrainingError(f"{path}: corrupted model config JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise TrainingError(f"{path}: expected a JSON object")
    return cfg


def fit_to_data(cfg: dict, vocab_size: int, bos_id: int, eos_id: int, pad_id: int, seq_len: int) -> dict:
    """Fills the tokenizer's vocab size and special ids into `cfg` and checks it can train on seq_len tokens."""
    cfg = dict(cfg)
    given_vocab = cfg.get("vocab_size")
    if given_vocab is not None and given_vocab < vocab_size:
        raise TrainingError(f"model vocab_size {given_vocab} is smaller than the tokenizer's {vocab_size}")
    cfg.setdefault("vocab_size", vocab_size)
    cfg.setdefault("bos_token_id", bos_id)
    cfg.setdefault("eos_token_id", eos_id)
    cfg.setdefault("pad_token_id", pad_id)
    try:
        model = build_model(cfg)
    except ModelConfigError as e:
        raise TrainingError(f"model config: {e}") from None
    if model.max_positions < seq_len:
        raise TrainingError(f"max_position_embeddings {model.max_positions} is shorter than the sequence length {seq_len}")
    return cfg
