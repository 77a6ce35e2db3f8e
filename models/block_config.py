"""Block Transformer configuration: config.json ↔ a frozen, hashable dataclass.

A Block Transformer (global-to-local; Ho et al. 2024) has two decoders of the
decoder-only layer code: a block decoder over block embeddings (one position
per block of `block_length` tokens, plus a learned start block) and a token
decoder that sees only the current block, conditioned on the block decoder's
output for it. Its config.json holds the shared fields at the top level and
each decoder's sizes in its own sub-dictionary:

    {"architectures": ["BlockTransformerForCausalLM"], "model_type": "block_transformer",
     "vocab_size": 8192, "block_length": 4, "max_position_embeddings": 1024,
     "embedder": "lookup", "context_injection": "prefix", "num_prefix_tokens": 2,
     "block_decoder": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4,
                       "num_attention_heads": 8, "num_key_value_heads": 4},
     "token_decoder": {...the same keys...},
     "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": false}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from models.config import DecoderConfig, ModelConfigError
from models.stacks import STACK_KEYS, stack_config

ARCHITECTURE = "BlockTransformerForCausalLM"
MODEL_TYPE = "block_transformer"
EMBEDDERS = ("lookup", "projection")  # concatenated token embeddings of width D/L, or of any width projected to D
INJECTIONS = ("prefix", "sum")  # context as prefix vectors replacing BOS, or added to every input embedding


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    vocab_size: int
    block_length: int
    block_decoder: DecoderConfig  # its positions: one per block plus the start block
    token_decoder: DecoderConfig  # its positions: the prefix, then the block's tokens
    max_position_embeddings: int  # tokens
    embedder: str = "lookup"
    embedder_dim: int = 0  # width of one token's embedding before the block's L are concatenated
    injection: str = "prefix"
    num_prefix: int = 2  # prefix vectors the context expands into (1 under "sum")
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    @property
    def head_counts(self) -> tuple[int, int]:
        """Units a mesh may split both decoders' projections into (jaxspec/sharding.py)."""
        b, t = self.block_decoder, self.token_decoder
        return math.gcd(b.num_heads, t.num_heads), math.gcd(b.num_kv_heads, t.num_kv_heads)

    @property
    def max_blocks(self) -> int:
        return self.max_position_embeddings // self.block_length


def block_config_from_hf(cfg: Mapping[str, Any]) -> BlockConfig:
    try:
        vocab = int(cfg["vocab_size"])
        block = int(cfg["block_length"])
        positions = int(cfg["max_position_embeddings"])
    except KeyError as e:
        raise ModelConfigError(f"config.json lacks required field {e.args[0]!r}") from None
    if block < 1:
        raise ModelConfigError(f"block_length must be >= 1, got {block}")
    if positions % block:
        raise ModelConfigError(
            f"block_length {block} does not divide max_position_embeddings {positions} (the context must be whole blocks)"
        )
    embedder = cfg.get("embedder", "lookup")
    injection = cfg.get("context_injection", "prefix")
    if embedder not in EMBEDDERS:
        raise ModelConfigError(f"embedder {embedder!r} is not supported (supported: {', '.join(EMBEDDERS)})")
    if injection not in INJECTIONS:
        raise ModelConfigError(f"context_injection {injection!r} is not supported (supported: {', '.join(INJECTIONS)})")
    num_prefix = 1 if injection == "sum" else int(cfg.get("num_prefix_tokens", 2))
    if num_prefix < 1:
        raise ModelConfigError(f"num_prefix_tokens must be >= 1, got {num_prefix}")
    block_decoder = stack_config(cfg, "block_decoder", vocab, positions // block + 1)
    token_decoder = stack_config(cfg, "token_decoder", vocab, num_prefix + block)
    width = block_decoder.hidden_size
    if embedder == "lookup":
        if width % block:
            raise ModelConfigError(
                f"the lookup embedder concatenates {block} embeddings into the block decoder's {width} channels: "
                f"block_length must divide hidden_size"
            )
        embedder_dim = width // block
    else:
        embedder_dim = int(cfg.get("embedder_hidden_size", width // block or 1))
    eos = cfg.get("eos_token_id")
    return BlockConfig(
        vocab_size=vocab,
        block_length=block,
        block_decoder=block_decoder,
        token_decoder=token_decoder,
        max_position_embeddings=positions,
        embedder=embedder,
        embedder_dim=embedder_dim,
        injection=injection,
        num_prefix=num_prefix,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=() if eos is None else (eos,) if isinstance(eos, int) else tuple(int(e) for e in eos),
        pad_token_id=cfg.get("pad_token_id"),
    )


def block_hf_config(
    block_length: int,
    block_sizes: Mapping[str, int],
    token_sizes: Mapping[str, int],
    max_positions: int,
    rope_theta: float = 10000.0,
    tie_embeddings: bool = False,
    embedder: str = "lookup",
    injection: str = "prefix",
    num_prefix: int = 2,
) -> dict:
    """A config.json dictionary (vocab and special ids left for the data to fill)."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "block_length": block_length,
        "max_position_embeddings": max_positions,
        "embedder": embedder,
        "context_injection": injection,
        "num_prefix_tokens": num_prefix,
        "block_decoder": {k: int(block_sizes[k]) for k in STACK_KEYS},
        "token_decoder": {k: int(token_sizes[k]) for k in STACK_KEYS},
        "rope_theta": rope_theta,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": tie_embeddings,
    }
