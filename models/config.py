"""Decoder-only model configuration, built from a Hugging Face config.json.

One frozen, hashable dataclass describes every supported family; what differs
between Llama, Mistral, Qwen2/3 and Gemma 1/2/3 is a handful of switches.
Anything in a config.json that would change the computation and that we do not
implement is refused by name, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class ModelConfigError(ValueError):
    """A config.json describes a model or an option this package does not implement."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    kind: str = "default"  # default | linear | llama3
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    activation: str = "silu"
    # Gemma's RMSNorm multiplies by (1 + w); Llama's by w.
    norm_plus_one: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    # Gemma 2/3: norms before and after both attention and MLP.
    sandwich_norms: bool = False
    # Gemma: embeddings multiplied by sqrt(hidden_size).
    scale_embeddings: bool = False
    attn_scale: float = 1.0
    attn_softcap: float | None = None
    final_softcap: float | None = None
    # Per layer: the sliding window W (a token sees the last W positions,
    # itself included) or None for global attention.
    layer_windows: tuple[int | None, ...] = ()
    rope: RopeConfig = RopeConfig()
    # Gemma 3 gives sliding layers a RoPE of their own; None means "same as rope".
    rope_local: RopeConfig | None = None
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    @property
    def head_counts(self) -> tuple[int, int]:
        """(query heads, KV heads): the whole units a mesh may split projections into (jaxspec/sharding.py)."""
        return self.num_heads, self.num_kv_heads

    @property
    def num_params(self) -> int:
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        per_layer = d * (q + 2 * kv) + q * d + 3 * d * f
        head = 0 if self.tie_word_embeddings else d * v
        return v * d + self.num_layers * per_layer + head

    def rope_for_layer(self, layer: int) -> RopeConfig:
        if self.layer_windows[layer] is not None and self.rope_local is not None:
            return self.rope_local
        return self.rope


# Hugging Face architectures → model_type values we accept for them.
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3_text",
}
_ARCH_BY_TYPE = {v: k for k, v in ARCHITECTURES.items()}
_ACTIVATIONS = {"silu", "swish", "gelu_pytorch_tanh", "gelu_new", "gelu", "relu"}
_GEMMA = {"gemma", "gemma2", "gemma3_text"}


def _parse_rope(params: Mapping[str, Any] | None, default_theta: float, max_pos: int) -> RopeConfig:
    params = dict(params or {})
    kind = params.get("rope_type", params.get("type", "default"))
    theta = float(params.get("rope_theta", default_theta))
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ModelConfigError("partial_rotary_factor != 1 is not supported")
    if kind == "default":
        return RopeConfig(theta=theta)
    if kind == "linear":
        return RopeConfig(theta=theta, kind="linear", factor=float(params["factor"]))
    if kind == "llama3":
        return RopeConfig(
            theta=theta,
            kind="llama3",
            factor=float(params["factor"]),
            low_freq_factor=float(params["low_freq_factor"]),
            high_freq_factor=float(params["high_freq_factor"]),
            original_max_position_embeddings=int(params.get("original_max_position_embeddings", max_pos)),
        )
    raise ModelConfigError(f"rope type {kind!r} is not supported (supported: default, linear, llama3)")


def _eos_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _layer_windows(cfg: Mapping[str, Any], model_type: str, num_layers: int) -> tuple[int | None, ...]:
    window = cfg.get("sliding_window")
    layer_types = cfg.get("layer_types")
    if model_type == "mistral":
        return (window,) * num_layers
    if model_type in ("qwen2", "qwen3") and layer_types is None:
        # Older Qwen configs: sliding window on layers >= max_window_layers when enabled.
        if not cfg.get("use_sliding_window") or window is None:
            return (None,) * num_layers
        first = cfg.get("max_window_layers", num_layers)
        return tuple(window if i >= first else None for i in range(num_layers))
    if model_type == "gemma2" and layer_types is None:
        return tuple(window if i % 2 == 0 else None for i in range(num_layers))
    if model_type == "gemma3_text" and layer_types is None:
        pattern = cfg.get("sliding_window_pattern", cfg.get("_sliding_window_pattern", 6))
        return tuple(None if (i + 1) % pattern == 0 else window for i in range(num_layers))
    if layer_types is None:
        return (None,) * num_layers
    if len(layer_types) != num_layers:
        raise ModelConfigError(f"layer_types has {len(layer_types)} entries for {num_layers} layers")
    out = []
    for kind in layer_types:
        if kind == "full_attention":
            out.append(None)
        elif kind == "sliding_attention":
            if window is None:
                raise ModelConfigError("layer_types asks for sliding_attention but sliding_window is null")
            out.append(int(window))
        else:
            raise ModelConfigError(f"layer type {kind!r} is not supported")
    return tuple(out)


def from_hf_config(cfg: Mapping[str, Any]) -> DecoderConfig:
    """Builds a DecoderConfig from a Hugging Face config.json dictionary."""
    archs = cfg.get("architectures") or []
    model_type = cfg.get("model_type")
    if archs:
        unknown = [a for a in archs if a not in ARCHITECTURES]
        if unknown:
            raise ModelConfigError(
                f"unknown architecture {unknown[0]!r} (supported: {', '.join(sorted(ARCHITECTURES))})"
            )
        arch = archs[0]
        if model_type is not None and model_type != ARCHITECTURES[arch]:
            raise ModelConfigError(f"architecture {arch} does not match model_type {model_type!r}")
        model_type = ARCHITECTURES[arch]
    elif model_type in _ARCH_BY_TYPE:
        arch = _ARCH_BY_TYPE[model_type]
    else:
        raise ModelConfigError(
            f"unknown model_type {model_type!r} (supported: {', '.join(sorted(_ARCH_BY_TYPE))})"
        )

    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        layers = int(cfg["num_hidden_layers"])
        vocab = int(cfg["vocab_size"])
        intermediate = int(cfg["intermediate_size"])
    except KeyError as e:
        raise ModelConfigError(f"config.json lacks required field {e.args[0]!r}") from None
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise ModelConfigError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    gemma = model_type in _GEMMA

    activation = cfg.get("hidden_activation") if model_type in ("gemma2", "gemma3_text") else None
    activation = activation or cfg.get("hidden_act") or ("gelu_pytorch_tanh" if gemma else "silu")
    if activation not in _ACTIVATIONS:
        raise ModelConfigError(f"activation {activation!r} is not supported")
    if cfg.get("use_bidirectional_attention"):
        raise ModelConfigError("use_bidirectional_attention is not supported for causal decoding")
    if cfg.get("pretraining_tp", 1) not in (1, None):
        raise ModelConfigError("pretraining_tp > 1 is not supported")

    max_pos = int(cfg.get("max_position_embeddings", 2048))
    default_theta = float(cfg.get("rope_theta", 10000.0))
    rope_params = cfg.get("rope_parameters") or cfg.get("rope_scaling")
    rope_local = None
    if isinstance(rope_params, Mapping) and "full_attention" in rope_params:
        rope = _parse_rope(rope_params["full_attention"], default_theta, max_pos)
        if rope_params.get("sliding_attention") is not None:
            rope_local = _parse_rope(rope_params["sliding_attention"], default_theta, max_pos)
    else:
        rope = _parse_rope(rope_params, default_theta, max_pos)
        if model_type == "gemma3_text":
            rope_local = RopeConfig(theta=float(cfg.get("rope_local_base_freq", 10000.0)))

    windows = _layer_windows(cfg, model_type, layers)
    attention_bias = bool(cfg.get("attention_bias", False))
    query_pre_attn_scalar = cfg.get("query_pre_attn_scalar")
    attn_scale = (
        float(query_pre_attn_scalar) ** -0.5
        if model_type in ("gemma2", "gemma3_text") and query_pre_attn_scalar
        else head_dim**-0.5
    )

    return DecoderConfig(
        architecture=arch,
        model_type=model_type,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        activation=activation,
        norm_plus_one=gemma,
        qkv_bias=True if model_type == "qwen2" else attention_bias,
        o_bias=attention_bias if model_type != "qwen2" else False,
        mlp_bias=bool(cfg.get("mlp_bias", False)) if model_type == "llama" else False,
        qk_norm=model_type in ("qwen3", "gemma3_text"),
        sandwich_norms=model_type in ("gemma2", "gemma3_text"),
        scale_embeddings=gemma,
        attn_scale=attn_scale,
        attn_softcap=cfg.get("attn_logit_softcapping") if model_type in ("gemma2", "gemma3_text") else None,
        final_softcap=cfg.get("final_logit_softcapping") if model_type in ("gemma2", "gemma3_text") else None,
        layer_windows=windows,
        rope=rope,
        rope_local=rope_local,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", gemma)),
        max_position_embeddings=max_pos,
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=_eos_ids(cfg.get("eos_token_id")),
        pad_token_id=cfg.get("pad_token_id"),
    )
