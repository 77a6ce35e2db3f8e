"""T5-family configuration, built from a Hugging Face config.json.

One frozen, hashable dataclass covers T5 v1.0 (ReLU MLP, head tied to the
shared embedding, decoder output scaled by d_model^-0.5) and v1.1 / Flan-T5 /
mT5 / ByT5 (gated-GELU MLP, separate head, no scaling). Anything in the config
that would change the computation and is not implemented is refused by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from models.config import ModelConfigError

# Hugging Face architectures → model_type values we accept for them (mT5 runs the same code as T5).
T5_ARCHITECTURES = {"T5ForConditionalGeneration": "t5", "MT5ForConditionalGeneration": "mt5"}
# The activation half of feed_forward_proj, as transformers' ACT2FN names it; models.decoder.activation runs it.
_ACTIVATIONS = {"relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish"}


@dataclasses.dataclass(frozen=True)
class T5Config:
    architecture: str
    model_type: str
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_layers: int  # encoder blocks
    num_decoder_layers: int
    num_buckets: int
    max_distance: int
    layer_norm_epsilon: float
    activation: str
    gated: bool  # wi_0 (activated) * wi_1, as in v1.1; a single wi otherwise
    # Whether the head is the shared embedding. As in transformers 5, the checkpoint decides: a
    # checkpoint without lm_head.weight has a tied head (T5Model.for_checkpoint); the config's
    # tie_word_embeddings is only the guess for a model built without one.
    tie_word_embeddings: bool
    # Whether the decoder output is multiplied by d_model^-0.5 before the head (T5 v1.0; never mT5).
    scale_decoder_outputs: bool
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    decoder_start_token_id: int

    @property
    def head_counts(self) -> tuple[int, int]:
        """(query heads, KV heads), as DecoderConfig.head_counts: T5 attention has no grouped KV heads."""
        return self.num_heads, self.num_heads

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv


def _feed_forward(proj: str) -> tuple[str, bool]:
    """(activation, gated) for a feed_forward_proj such as "relu" or "gated-gelu"."""
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or parts[-1] not in _ACTIVATIONS:
        raise ModelConfigError(
            f"feed_forward_proj {proj!r} is not supported (supported: ACT or gated-ACT, ACT in {sorted(_ACTIVATIONS)})"
        )
    # transformers runs "gated-gelu" with the tanh approximation (gelu_new), for compatibility with v1.1.
    return ("gelu_new" if proj == "gated-gelu" else parts[-1]), len(parts) == 2


def _scale_decoder_outputs(cfg: Mapping[str, Any], model_type: str) -> bool:
    """transformers 5's rule: the saved `scale_decoder_outputs`, or, in a config written before that field
    existed, `tie_word_embeddings` (true or absent: v1.0, which scales; false: v1.1 / Flan-T5, which does
    not). mT5 never scales."""
    if model_type == "mt5":
        return False
    if "scale_decoder_outputs" in cfg:
        return bool(cfg["scale_decoder_outputs"])
    return cfg.get("tie_word_embeddings", True) is not False


def t5_config_from_hf(cfg: Mapping[str, Any]) -> T5Config:
    archs = cfg.get("architectures") or []
    model_type = cfg.get("model_type")
    arch = archs[0] if archs else next((a for a, t in T5_ARCHITECTURES.items() if t == model_type), None)
    if arch not in T5_ARCHITECTURES:
        raise ModelConfigError(f"{arch or model_type!r} is not a T5 architecture")
    if model_type is not None and model_type != T5_ARCHITECTURES[arch]:
        raise ModelConfigError(f"architecture {arch} does not match model_type {model_type!r}")
    try:
        d_model = int(cfg["d_model"])
        d_kv = int(cfg["d_kv"])
        d_ff = int(cfg["d_ff"])
        heads = int(cfg["num_heads"])
        layers = int(cfg["num_layers"])
        vocab = int(cfg["vocab_size"])
    except KeyError as e:
        raise ModelConfigError(f"config.json lacks required field {e.args[0]!r}") from None
    activation, gated = _feed_forward(str(cfg.get("feed_forward_proj", "relu")))
    num_buckets = int(cfg.get("relative_attention_num_buckets", 32))
    max_distance = int(cfg.get("relative_attention_max_distance", 128))
    # The decoder's buckets are exact below num_buckets // 2 and logarithmic from there to max_distance.
    if num_buckets < 4 or max_distance <= num_buckets // 2:
        raise ModelConfigError(
            f"relative_attention_num_buckets={num_buckets} with relative_attention_max_distance={max_distance} "
            "is not supported (need at least 4 buckets and a max distance beyond num_buckets // 2)"
        )
    pad = cfg.get("pad_token_id", 0)
    start = cfg.get("decoder_start_token_id", pad)
    if start is None:
        raise ModelConfigError("config.json names neither decoder_start_token_id nor pad_token_id")
    eos = cfg.get("eos_token_id", 1)
    return T5Config(
        architecture=arch,
        model_type=T5_ARCHITECTURES[arch],
        vocab_size=vocab,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_heads=heads,
        num_layers=layers,
        num_decoder_layers=int(cfg.get("num_decoder_layers") or layers),
        num_buckets=num_buckets,
        max_distance=max_distance,
        layer_norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-6)),
        activation=activation,
        gated=gated,
        tie_word_embeddings=cfg.get("tie_word_embeddings", True) is not False,
        scale_decoder_outputs=_scale_decoder_outputs(cfg, T5_ARCHITECTURES[arch]),
        eos_token_ids=() if eos is None else ((int(eos),) if isinstance(eos, int) else tuple(map(int, eos))),
        pad_token_id=pad,
        decoder_start_token_id=int(start),
    )
