"""T5Gemma (Hugging Face `T5GemmaForConditionalGeneration`): an encoder-decoder of Gemma 2 blocks.

Both stacks are Gemma 2 (sandwich norms, RMSNorm (1 + w), soft-caps,
query_pre_attn_scalar, alternating sliding windows, RoPE, GQA, embeddings
scaled by sqrt(hidden)), each described by a `DecoderConfig` parsed by the
decoder-only parser, and built from models/decoder.py's pieces. What differs:

- the encoder is bidirectional; as in transformers, its sliding layers let
  token i see token j when |i - j| <= W (W on each side, itself included),
  where the causal decoder's window is i - j < W;
- each decoder layer adds cross-attention (no RoPE, same scale and soft-cap)
  between self-attention and the MLP, with its own pre/post norms;
- encoder and decoder have separate embeddings; the head is tied to the
  decoder's (or `lm_head.out_proj` when tie_word_embeddings is false).

The cross-attention K/V depend only on the encoder output: `start` runs the
encoder once and computes every decoder layer's cross K/V once into the
`CrossCache`; `forward` (one decoder step) only reads them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.config import DecoderConfig, ModelConfigError, from_hf_config
from models.cross_cache import CrossCache
from models.decoder import (
    _INIT_STD,
    MLP,
    Attention,
    CausalLM,
    RMSNorm,
    _dense,
    attend,
    attention_masks,
    softcap,
)
from models.kv_cache import KVCache
from models.protocol import ModelOutput, Start

ARCHITECTURE = "T5GemmaForConditionalGeneration"


@dataclasses.dataclass(frozen=True)
class T5GemmaConfig:
    encoder: DecoderConfig
    decoder: DecoderConfig
    tie_word_embeddings: bool
    decoder_start_token_id: int
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def head_counts(self) -> tuple[int, int]:
        """(query heads, KV heads) that divide both stacks' counts: a mesh axis that splits these whole
        splits every projection of either stack (and the cross-attention K/V) between whole heads."""
        (eq, ekv), (dq, dkv) = self.encoder.head_counts, self.decoder.head_counts
        return math.gcd(eq, dq), math.gcd(ekv, dkv)


def _stack_config(sub: Mapping[str, Any], which: str) -> DecoderConfig:
    """One stack's sub-config, read as the Gemma 2 block it is (so unsupported options are refused by name)."""
    try:
        c = from_hf_config({**sub, "model_type": "gemma2", "architectures": None})
    except ModelConfigError as e:
        raise ModelConfigError(f"T5Gemma {which}: {e}") from None
    return dataclasses.replace(c, architecture=ARCHITECTURE, model_type=f"t5gemma_{which}")


def t5gemma_config(cfg: Mapping[str, Any]) -> T5GemmaConfig:
    """Builds a T5GemmaConfig from a Hugging Face config.json dictionary."""
    subs = {}
    for which in ("encoder", "decoder"):
        if not isinstance(cfg.get(which), Mapping):
            raise ModelConfigError(f"T5Gemma config.json lacks its {which!r} sub-config")
        subs[which] = cfg[which]
    encoder, decoder = _stack_config(subs["encoder"], "encoder"), _stack_config(subs["decoder"], "decoder")
    if encoder.vocab_size != decoder.vocab_size:
        raise ModelConfigError(
            f"T5Gemma encoder and decoder vocabularies differ ({encoder.vocab_size} vs {decoder.vocab_size})"
        )

    # transformers copies the decoder's special tokens to the top level unless given there.
    def special(key):
        return cfg[key] if cfg.get(key) is not None else subs["decoder"].get(key)

    # generate() starts the decoder from decoder_start_token_id, else bos (as T5Gemma's _shift_right).
    start = cfg.get("decoder_start_token_id")
    start = special("bos_token_id") if start is None else start
    if start is None:
        raise ModelConfigError("T5Gemma config.json has neither decoder_start_token_id nor bos_token_id")
    eos = special("eos_token_id")
    return T5GemmaConfig(
        encoder=encoder,
        decoder=decoder,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        decoder_start_token_id=int(start),
        eos_token_ids=() if eos is None else ((eos,) if isinstance(eos, int) else tuple(int(e) for e in eos)),
        pad_token_id=special("pad_token_id"),
    )


def _norm(c: DecoderConfig, dtype, name: str | None = None) -> RMSNorm:
    return RMSNorm(c.rms_norm_eps, c.norm_plus_one, dtype, name=name)


def _embed(c: DecoderConfig, dtype, name: str | None = None) -> nn.Embed:
    init = nn.initializers.normal(_INIT_STD)
    return nn.Embed(c.vocab_size, c.hidden_size, dtype=dtype, param_dtype=jnp.float32, embedding_init=init, name=name)


def _scaled(embed: nn.Embed, c: DecoderConfig, tokens, dtype):
    return embed(tokens) * jnp.asarray(c.hidden_size**0.5, dtype)


def bidirectional_masks(c: DecoderConfig, source_mask: jax.Array) -> dict:
    """One [B, S, S] encoder mask per distinct window: every real token, within |i - j| <= W on sliding layers."""
    b, s = source_mask.shape
    visible = jnp.broadcast_to(source_mask[:, None, :], (b, s, s))
    pos = jnp.arange(s)
    near = jnp.abs(pos[:, None] - pos[None, :])
    return {w: visible if w is None else visible & (near <= w)[None] for w in set(c.layer_windows)}


class EncoderLayer(nn.Module):
    config: DecoderConfig
    layer: int
    dtype: Any

    @nn.compact
    def __call__(self, x, positions, allowed):
        c = self.config
        b, s, _ = x.shape
        # Decoder-only self-attention over a throwaway cache that holds exactly this input.
        scratch = KVCache.zeros(1, b, s, c.num_kv_heads, c.head_dim, self.dtype)
        slots = jnp.broadcast_to(jnp.arange(s), (b, s))
        h, _, _ = Attention(c, self.layer, self.dtype, name="self_attn")(
            _norm(c, self.dtype, "pre_self_attn_layernorm")(x), positions, scratch.keys[0], scratch.values[0], slots, allowed
        )
        x = x + _norm(c, self.dtype, "post_self_attn_layernorm")(h)
        h = MLP(c, self.dtype, name="mlp")(_norm(c, self.dtype, "pre_feedforward_layernorm")(x))
        return x + _norm(c, self.dtype, "post_feedforward_layernorm")(h)


class Encoder(nn.Module):
    config: DecoderConfig
    dtype: Any

    @nn.compact
    def __call__(self, tokens, source_mask):
        c = self.config
        b, s = tokens.shape
        x = _scaled(_embed(c, self.dtype, "embed_tokens"), c, tokens, self.dtype)
        positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        masks = bidirectional_masks(c, source_mask)
        for i in range(c.num_layers):
            x = EncoderLayer(c, i, self.dtype, name=f"layers_{i}")(x, positions, masks[c.layer_windows[i]])
        return _norm(c, self.dtype, "norm")(x)


class CrossAttention(nn.Module):
    """Decoder → encoder attention: K/V from the encoder output (computed once), no RoPE."""

    config: DecoderConfig
    dtype: Any

    def setup(self):
        c = self.config
        self.q_proj = _dense(c.num_heads * c.head_dim, c.qkv_bias, self.dtype)
        self.k_proj = _dense(c.num_kv_heads * c.head_dim, c.qkv_bias, self.dtype)
        self.v_proj = _dense(c.num_kv_heads * c.head_dim, c.qkv_bias, self.dtype)
        self.o_proj = _dense(c.hidden_size, c.o_bias, self.dtype)

    def key_values(self, memory):
        """memory [B, S, D_enc] → keys [B, KVH, Dh, S], values [B, KVH, S, Dh] (the KVCache layouts)."""
        c = self.config
        b, s, _ = memory.shape
        k = self.k_proj(memory).reshape(b, s, c.num_kv_heads, c.head_dim)
        v = self.v_proj(memory).reshape(b, s, c.num_kv_heads, c.head_dim)
        return k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)

    def __call__(self, x, keys, values, source_mask):
        c = self.config
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, c.num_heads, c.head_dim)
        allowed = jnp.broadcast_to(source_mask[:, None, :], (b, t, source_mask.shape[1]))
        return self.o_proj(attend(c, q, keys, values, allowed, self.dtype))


class DecoderLayer(nn.Module):
    config: DecoderConfig
    layer: int
    dtype: Any

    def setup(self):
        c, dt = self.config, self.dtype
        self.pre_self_attn_layernorm = _norm(c, dt)
        self.self_attn = Attention(c, self.layer, dt)
        self.post_self_attn_layernorm = _norm(c, dt)
        self.pre_cross_attn_layernorm = _norm(c, dt)
        self.cross_attn = CrossAttention(c, dt)
        self.post_cross_attn_layernorm = _norm(c, dt)
        self.pre_feedforward_layernorm = _norm(c, dt)
        self.mlp = MLP(c, dt)
        self.post_feedforward_layernorm = _norm(c, dt)

    def cross_key_values(self, memory):
        return self.cross_attn.key_values(memory)

    def __call__(self, x, positions, keys, values, slots, allowed, cross_keys, cross_values, source_mask):
        h, keys, values = self.self_attn(self.pre_self_attn_layernorm(x), positions, keys, values, slots, allowed)
        x = x + self.post_self_attn_layernorm(h)
        h = self.cross_attn(self.pre_cross_attn_layernorm(x), cross_keys, cross_values, source_mask)
        x = x + self.post_cross_attn_layernorm(h)
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        return x, keys, values


class Decoder(nn.Module):
    config: DecoderConfig
    dtype: Any

    def setup(self):
        c = self.config
        self.embed_tokens = _embed(c, self.dtype)
        self.layers = [DecoderLayer(c, i, self.dtype) for i in range(c.num_layers)]  # named layers_0, ...
        self.norm = _norm(c, self.dtype)

    def cross_key_values(self, memory):
        kv = [layer.cross_key_values(memory) for layer in self.layers]
        return tuple(k for k, _ in kv), tuple(v for _, v in kv)

    def tied_logits(self, hidden):
        return self.embed_tokens.attend(hidden)

    def __call__(self, tokens, positions, cache: CrossCache, window_mask):
        """The final-norm hidden states [B, T, D] and the self-attention cache with this window's K/V written."""
        c = self.config
        sa = cache.self_attn
        x = _scaled(self.embed_tokens, c, tokens, self.dtype)
        slots = sa.lengths[:, None] + jnp.arange(tokens.shape[1])[None, :]
        masks = attention_masks(c, sa, positions, window_mask)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(
                x, positions, sa.keys[i], sa.values[i], slots, masks[c.layer_windows[i]],
                cache.cross_keys[i], cache.cross_values[i], cache.source_mask,
            )
            keys.append(k)
            values.append(v)
        return self.norm(x), sa.replace(keys=tuple(keys), values=tuple(values))


class LMHead(nn.Module):
    vocab_size: int
    dtype: Any

    @nn.compact
    def __call__(self, hidden):
        return _dense(self.vocab_size, False, self.dtype, "out_proj")(hidden)


class T5GemmaModule(nn.Module):
    config: T5GemmaConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.encoder = Encoder(c.encoder, self.dtype)
        self.decoder = Decoder(c.decoder, self.dtype)
        if not c.tie_word_embeddings:
            self.lm_head = LMHead(c.vocab_size, self.dtype)

    def encode(self, tokens, source_mask):
        return self.encoder(tokens, source_mask)

    def cross_key_values(self, memory):
        return self.decoder.cross_key_values(memory)

    def decode(self, tokens, positions, cache: CrossCache, window_mask=None) -> ModelOutput:
        hidden, self_attn = self.decoder(tokens, positions, cache, window_mask)
        c = self.config
        logits = self.decoder.tied_logits(hidden) if c.tie_word_embeddings else self.lm_head(hidden)
        logits = softcap(logits.astype(jnp.float32), c.decoder.final_softcap)
        return ModelOutput(logits, hidden, cache.replace(self_attn=self_attn))

    def __call__(self, source, source_mask, tokens, positions, self_attn: KVCache):
        """Everything once (what `init` traces to create every parameter)."""
        keys, values = self.cross_key_values(self.encode(source, source_mask))
        return self.decode(tokens, positions, CrossCache(self_attn, keys, values, source_mask))


def _source_mask(source_len, width: int):
    return jnp.arange(width)[None, :] < source_len[:, None]


@dataclasses.dataclass(frozen=True)
class T5Gemma:
    """A T5Gemma model as the engine sees it (models/protocol.py): static config + pure functions of params."""

    config: T5GemmaConfig
    dtype: str = "float32"  # compute and cache dtype

    is_encoder_decoder = True
    # Param paths mirror the HF names exactly as the decoder-only ones do
    # (`decoder/layers_1/cross_attn/k_proj/kernel` ↔ `model.decoder.layers.1.cross_attn.k_proj.weight`,
    # `lm_head/out_proj/kernel` ↔ `lm_head.out_proj.weight`).
    hf_tensor_name = staticmethod(CausalLM.hf_tensor_name)

    @property
    def module(self) -> T5GemmaModule:
        return T5GemmaModule(self.config, jnp.dtype(self.dtype))

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_positions(self) -> int:
        """Both the encoder input and the decoder output must fit (generate checks each against this)."""
        return min(self.config.encoder.max_position_embeddings, self.config.decoder.max_position_embeddings)

    def describe(self) -> dict:
        e, d = self.config.encoder, self.config.decoder
        return {
            "architecture": ARCHITECTURE,
            "model_type": "t5gemma",
            "encoder_layers": e.num_layers,
            "decoder_layers": d.num_layers,
            "encoder_hidden_size": e.hidden_size,
            "hidden_size": d.hidden_size,
            "heads": d.num_heads,
            "kv_heads": d.num_kv_heads,
            "head_dim": d.head_dim,
            "vocab_size": d.vocab_size,
            "sliding_windows": sorted({w for w in e.layer_windows + d.layer_windows if w is not None}),
            "tied_embeddings": self.config.tie_word_embeddings,
            "max_positions": self.max_positions,
        }

    @property
    def hf_aliases(self) -> frozenset[str]:
        return frozenset({"lm_head.out_proj.weight"}) if self.config.tie_word_embeddings else frozenset()

    def _self_cache(self, batch: int, max_len: int, dtype) -> KVCache:
        d = self.config.decoder
        return KVCache.zeros(d.num_layers, batch, max_len, d.num_kv_heads, d.head_dim, dtype)

    def init_cache(self, batch: int, max_len: int, source_len: int, dtype=None) -> CrossCache:
        """An empty decoding cache: max_len self-attention slots, zero cross K/V over source_len positions."""
        dtype = dtype or jnp.dtype(self.dtype)
        cross = self._self_cache(batch, source_len, dtype)  # the same per-layer layouts
        return CrossCache(
            self._self_cache(batch, max_len, dtype), cross.keys, cross.values, jnp.zeros((batch, source_len), bool)
        )

    def for_checkpoint(self, tensor_names: set[str]) -> T5Gemma:
        """The config alone decides this family's layout."""
        return self

    def init_params(self, rng: jax.Array):
        tokens = jnp.zeros((1, 1), jnp.int32)
        self_attn = self._self_cache(1, 1, jnp.dtype(self.dtype))
        return self.module.init(rng, tokens, jnp.ones((1, 1), bool), tokens, tokens, self_attn)["params"]

    def encode(self, params, source, source_len) -> jax.Array:
        """The encoder output [B, S, D_enc] of right-padded source [B, S] (rows past source_len are junk)."""
        mask = _source_mask(source_len, source.shape[1])
        return self.module.apply({"params": params}, source, mask, method=T5GemmaModule.encode)

    def _cross_cache(self, params, source, source_len, self_attn: KVCache) -> CrossCache:
        memory = self.encode(params, source, source_len)
        keys, values = self.module.apply({"params": params}, memory, method=T5GemmaModule.cross_key_values)
        return CrossCache(self_attn, keys, values, _source_mask(source_len, source.shape[1]))

    def start(self, params, prompts, prompt_len, new_slots: int, constrain=None) -> Start:
        """Encodes the prompts once, fills every layer's cross K/V, and starts the decoder at its start token."""
        b = prompts.shape[0]
        cache = self._cross_cache(params, prompts, prompt_len, self._self_cache(b, 1 + new_slots, jnp.dtype(self.dtype)))
        if constrain is not None:  # the whole cache, cross K/V included, laid out on the mesh
            cache = constrain(cache)
        tokens = jnp.full((b, 1), self.config.decoder_start_token_id, jnp.int32)
        return Start(cache, tokens, jnp.ones((b,), jnp.int32), (prompts, prompt_len))

    def forward(self, params, tokens, positions, cache: CrossCache, window_mask=None) -> ModelOutput:
        return self.module.apply({"params": params}, tokens, positions, cache, window_mask, method=T5GemmaModule.decode)

    def output_embedding(self, params) -> jax.Array:
        """[V, D]: the rows the decoder's final hidden state is scored against (before the logit softcap)."""
        if self.config.tie_word_embeddings:
            return params["decoder"]["embed_tokens"]["embedding"]
        return params["lm_head"]["out_proj"]["kernel"].T

    def sequence_logits(self, params, decoder_tokens, source, source_len) -> jax.Array:
        """Teacher-forced logits [B, T, V]: decoder_tokens[:, 0] is the start token, logits[:, t] predict t + 1."""
        b, t = decoder_tokens.shape
        cache = self._cross_cache(params, source, source_len, self._self_cache(b, t, jnp.dtype(self.dtype)))
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        return self.forward(params, decoder_tokens, positions, cache).logits


def build(cfg: Mapping[str, Any], dtype: str) -> T5Gemma:
    return T5Gemma(t5gemma_config(cfg), dtype)
