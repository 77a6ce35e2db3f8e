"""HAT configuration: config.json ↔ a frozen, hashable dataclass.

A hierarchical autoregressive transformer (byte → word → byte) has three
stacks of the decoder-only layer code: a byte encoder and a byte decoder with
sliding-window attention over bytes, and a word backbone over word
embeddings. Its config.json holds the shared fields at the top level and each
stack's sizes in its own sub-dictionary:

    {"architectures": ["HATForCausalLM"], "model_type": "hat",
     "max_position_embeddings": 4096, "max_word_bytes": 100, "sliding_window": 256,
     "connector_heads": 4,
     "encoder": {"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2},
     "backbone": {...the same keys...}, "decoder": {...the same keys, the encoder's width...},
     "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "hidden_act": "silu"}

The vocabulary is fixed: the 256 byte values and the end-of-text special
(models/hat_words.py). Positions count bytes in the byte stacks and words in
the backbone; a sequence of S bytes has at most S words.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from models.config import DecoderConfig, ModelConfigError
from models.stacks import STACK_KEYS, stack_config
from models.hat_words import EOS, MAX_WORD_BYTES, VOCAB_SIZE

ARCHITECTURE = "HATForCausalLM"
MODEL_TYPE = "hat"
STACKS = ("encoder", "backbone", "decoder")


@dataclasses.dataclass(frozen=True)
class HATConfig:
    encoder: DecoderConfig  # byte positions, sliding window
    backbone: DecoderConfig  # word positions, global attention
    decoder: DecoderConfig  # byte positions, sliding window, the encoder's width
    max_position_embeddings: int  # bytes
    max_word_bytes: int = MAX_WORD_BYTES
    sliding_window: int = 256
    connector_heads: int = 4
    vocab_size: int = VOCAB_SIZE
    eos_token_ids: tuple[int, ...] = (EOS,)
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False

    @property
    def byte_width(self) -> int:
        return self.encoder.hidden_size

    @property
    def connector_head_dim(self) -> int:
        return self.byte_width // self.connector_heads

    @property
    def head_counts(self) -> tuple[int, int]:
        """Units a mesh may split every stack's projections into (jaxspec/sharding.py)."""
        stacks = (self.encoder, self.backbone, self.decoder)
        return (
            math.gcd(self.connector_heads, *(s.num_heads for s in stacks)),
            math.gcd(*(s.num_kv_heads for s in stacks)),
        )


def hat_config_from_hf(cfg: Mapping[str, Any]) -> HATConfig:
    try:
        positions = int(cfg["max_position_embeddings"])
    except KeyError as e:
        raise ModelConfigError(f"config.json lacks required field {e.args[0]!r}") from None
    if int(cfg.get("vocab_size", VOCAB_SIZE)) != VOCAB_SIZE:
        raise ModelConfigError(f"a HAT's vocabulary is the 256 bytes and end of text ({VOCAB_SIZE}), not {cfg['vocab_size']}")
    window = int(cfg.get("sliding_window", 256))
    max_word = int(cfg.get("max_word_bytes", MAX_WORD_BYTES))
    heads = int(cfg.get("connector_heads", 4))
    if window < 1 or max_word < 1 or heads < 1:
        raise ModelConfigError("sliding_window, max_word_bytes and connector_heads must be >= 1")
    encoder = stack_config(cfg, "encoder", VOCAB_SIZE, positions, window)
    backbone = stack_config(cfg, "backbone", VOCAB_SIZE, positions, None)
    decoder = stack_config(cfg, "decoder", VOCAB_SIZE, positions, window)
    if decoder.hidden_size != encoder.hidden_size:
        raise ModelConfigError(
            f"the decoder reads the encoder's bytes: its hidden_size {decoder.hidden_size} must equal the encoder's "
            f"{encoder.hidden_size}"
        )
    if encoder.hidden_size % heads:
        raise ModelConfigError(f"connector_heads {heads} must divide the encoder's hidden_size {encoder.hidden_size}")
    return HATConfig(
        encoder=encoder,
        backbone=backbone,
        decoder=decoder,
        max_position_embeddings=positions,
        max_word_bytes=max_word,
        sliding_window=window,
        connector_heads=heads,
    )


def hat_hf_config(
    encoder: Mapping[str, int],
    backbone: Mapping[str, int],
    decoder: Mapping[str, int],
    max_positions: int,
    sliding_window: int = 256,
    max_word_bytes: int = MAX_WORD_BYTES,
    connector_heads: int = 4,
    rope_theta: float = 10000.0,
) -> dict:
    """A config.json dictionary."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "vocab_size": VOCAB_SIZE,
        "eos_token_id": EOS,
        "max_position_embeddings": max_positions,
        "max_word_bytes": max_word_bytes,
        "sliding_window": sliding_window,
        "connector_heads": connector_heads,
        **{name: {k: int(sizes[k]) for k in STACK_KEYS} for name, sizes in zip(STACKS, (encoder, backbone, decoder))},
        "rope_theta": rope_theta,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
    }
