"""T5 as an encoder-decoder model for the engine (v1.0, v1.1, Flan-T5, mT5, ByT5, CodeT5+ 220M/770M).

`T5` is a linen module whose parameter paths mirror the Hugging Face tensor
names (`encoder/block_0/layer_0/SelfAttention/q/kernel` ↔
`encoder.block.0.layer.0.SelfAttention.q.weight`), so conversion is a rename
plus a transpose. `T5Model` is the frozen object the engine holds.

What sets T5 apart from the decoder-only families: RMSNorm without mean or
bias, no biases, no 1/sqrt(d) attention scale (it is folded into the
initialisation), and no absolute positions: block 0 of each stack owns a
relative position bias over bucketed distances that every block of that stack
adds to its self-attention scores. Cross-attention has no position bias; its
K/V depend only on the encoder output, so `start` computes them once into the
CrossCache and `forward` (the decoder) only reads them.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.cross_cache import CrossCache
from models.decoder import activation, window_visibility
from models.kv_cache import KVCache, write_slots
from models.protocol import ModelOutput, Start
from models.t5_config import T5Config

_NEG_INF = float(jnp.finfo(jnp.float32).min)


@functools.lru_cache(maxsize=None)
def _bucket_table(num_buckets: int, max_distance: int) -> np.ndarray:
    """T5's bucket of every distance d in [0, max_distance] (larger distances share the last one).

    d < max_exact = num_buckets // 2 has a bucket of its own; beyond, the bucket is
    max_exact + floor((num_buckets - max_exact) * log(d / max_exact) / log(max_distance / max_exact)),
    capped at num_buckets - 1. The floor is found in integer arithmetic, so buckets never depend on
    how a backend rounds a float32 log: where the quotient is a whole number (d = 16, 32, 64 in the
    default encoder), a log one ulp low would land one bucket low.
    """
    max_exact = num_buckets // 2
    span = num_buckets - max_exact
    table = []
    for d in range(max_distance + 1):
        if d < max_exact:
            table.append(d)
            continue
        # n <= span * log(d / max_exact) / log(max_distance / max_exact)
        #   <=>  max_distance^n * max_exact^span <= d^span * max_exact^n
        n = 0
        while n < span and max_distance ** (n + 1) * max_exact**span <= d**span * max_exact ** (n + 1):
            n += 1
        table.append(min(max_exact + n, num_buckets - 1))
    return np.array(table, np.int32)


def relative_buckets(rel: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int) -> jax.Array:
    """Bucket of each relative position rel = key position - query position (HF's _relative_position_bucket).

    Bidirectional (encoder): half the buckets for keys after the query, half for the rest.
    One-sided (decoder): keys after the query all fall in bucket 0; causal masking hides them anyway.
    """
    if bidirectional:
        half = num_buckets // 2
        table = jnp.asarray(_bucket_table(half, max_distance))
        return jnp.where(rel > 0, half, 0) + table[jnp.minimum(jnp.abs(rel), max_distance)]
    table = jnp.asarray(_bucket_table(num_buckets, max_distance))
    return table[jnp.clip(-rel, 0, max_distance)]


def _dense(features: int, std: float, dtype) -> nn.Dense:
    return nn.Dense(
        features, use_bias=False, dtype=dtype, param_dtype=jnp.float32, kernel_init=nn.initializers.normal(std)
    )


class T5LayerNorm(nn.Module):
    """RMSNorm with a plain scale (T5LayerNorm): no mean subtraction, no bias; statistics in float32."""

    eps: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        xf = x.astype(jnp.float32)
        normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return weight.astype(self.dtype) * normed.astype(self.dtype)


class T5Attention(nn.Module):
    """Multi-head attention with unscaled scores; the stack's first self-attention also owns the position bias.

    Initial standard deviations are transformers' (the missing 1/sqrt(d_kv) lives in q's).
    """

    config: T5Config
    dtype: jnp.dtype
    has_relative_attention_bias: bool = False

    def setup(self):
        c = self.config
        self.q = _dense(c.inner_dim, (c.d_model * c.d_kv) ** -0.5, self.dtype)
        self.k = _dense(c.inner_dim, c.d_model**-0.5, self.dtype)
        self.v = _dense(c.inner_dim, c.d_model**-0.5, self.dtype)
        self.o = _dense(c.d_model, c.inner_dim**-0.5, self.dtype)
        if self.has_relative_attention_bias:
            self.relative_attention_bias = nn.Embed(
                c.num_buckets,
                c.num_heads,
                param_dtype=jnp.float32,
                embedding_init=nn.initializers.normal(c.d_model**-0.5),
            )

    def keys_values(self, x):
        """x [B, S, D] → keys [B, H, Dh, S], values [B, H, S, Dh] (the layouts of models/kv_cache.py)."""
        b, s, _ = x.shape
        c = self.config
        k = self.k(x).reshape(b, s, c.num_heads, c.d_kv)
        v = self.v(x).reshape(b, s, c.num_heads, c.d_kv)
        return k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)

    def position_bias(self, query_pos, key_pos, bidirectional: bool):
        """query_pos [B|1, T], key_pos [B|1, S] → float32 bias [B|1, H, T, S]."""
        c = self.config
        rel = key_pos[:, None, :] - query_pos[:, :, None]
        buckets = relative_buckets(rel, bidirectional, c.num_buckets, c.max_distance)
        return self.relative_attention_bias(buckets).astype(jnp.float32).transpose(0, 3, 1, 2)

    def __call__(self, x, keys, values, bias, allowed):
        """Queries from x [B, T, D] over keys/values [.., S]; bias [B|1, H, T, S] or None; allowed [B, T|1, S]."""
        c = self.config
        b, t, _ = x.shape
        q = self.q(x).reshape(b, t, c.num_heads, c.d_kv).transpose(0, 2, 1, 3)
        scores = jnp.einsum("bhtd,bhds->bhts", q, keys.astype(self.dtype)).astype(jnp.float32)
        if bias is not None:
            scores = scores + bias
        scores = jnp.where(allowed[:, None], scores, _NEG_INF)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhts,bhsd->bhtd", probs, values.astype(self.dtype))
        return self.o(out.transpose(0, 2, 1, 3).reshape(b, t, c.inner_dim))


class T5LayerSelfAttention(nn.Module):
    config: T5Config
    dtype: jnp.dtype
    has_relative_attention_bias: bool

    def setup(self):
        self.SelfAttention = T5Attention(self.config, self.dtype, self.has_relative_attention_bias)
        self.layer_norm = T5LayerNorm(self.config.layer_norm_epsilon, self.dtype)

    def __call__(self, x, bias, allowed, cache=None, slots=None):
        """Without a cache, x's own tokens are the keys (the encoder). With cache = (keys, values) of this
        layer, x's K/V are written at `slots` first and the whole cache is attended (the decoder)."""
        h = self.layer_norm(x)
        keys, values = self.SelfAttention.keys_values(h)
        if cache is not None:
            keys = write_slots(cache[0], slots, keys, KVCache.KEY_SLOT_AXIS)
            values = write_slots(cache[1], slots, values, KVCache.VALUE_SLOT_AXIS)
        return x + self.SelfAttention(h, keys, values, bias, allowed), (keys, values)


class T5LayerCrossAttention(nn.Module):
    config: T5Config
    dtype: jnp.dtype

    def setup(self):
        self.EncDecAttention = T5Attention(self.config, self.dtype)
        self.layer_norm = T5LayerNorm(self.config.layer_norm_epsilon, self.dtype)

    def __call__(self, x, keys, values, allowed):
        return x + self.EncDecAttention(self.layer_norm(x), keys, values, None, allowed)


class T5DenseReluDense(nn.Module):
    """v1.0: wo(act(wi x)); gated (v1.1): wo(act(wi_0 x) * wi_1 x). HF uses this name for both."""

    config: T5Config
    dtype: jnp.dtype

    def setup(self):
        c = self.config
        if c.gated:
            self.wi_0 = _dense(c.d_ff, c.d_model**-0.5, self.dtype)
            self.wi_1 = _dense(c.d_ff, c.d_model**-0.5, self.dtype)
        else:
            self.wi = _dense(c.d_ff, c.d_model**-0.5, self.dtype)
        self.wo = _dense(c.d_model, c.d_ff**-0.5, self.dtype)

    def __call__(self, x):
        act = activation(self.config.activation)
        return self.wo(act(self.wi_0(x)) * self.wi_1(x) if self.config.gated else act(self.wi(x)))


class T5LayerFF(nn.Module):
    config: T5Config
    dtype: jnp.dtype

    def setup(self):
        self.DenseReluDense = T5DenseReluDense(self.config, self.dtype)
        self.layer_norm = T5LayerNorm(self.config.layer_norm_epsilon, self.dtype)

    def __call__(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    """HF's block: layer_0 self-attention, (decoder) layer_1 cross-attention, then the feed-forward layer."""

    config: T5Config
    dtype: jnp.dtype
    is_decoder: bool
    has_relative_attention_bias: bool

    def setup(self):
        layers = [T5LayerSelfAttention(self.config, self.dtype, self.has_relative_attention_bias)]
        if self.is_decoder:
            layers.append(T5LayerCrossAttention(self.config, self.dtype))
        self.layer = layers + [T5LayerFF(self.config, self.dtype)]

    def __call__(self, x, bias, allowed, cache=None, slots=None, cross=None):
        """cross = (keys, values, allowed) over the encoder output, for a decoder block."""
        x, kv = self.layer[0](x, bias, allowed, cache, slots)
        if self.is_decoder:
            x = self.layer[1](x, *cross)
        return self.layer[-1](x), kv


class T5Stack(nn.Module):
    config: T5Config
    dtype: jnp.dtype
    is_decoder: bool

    def setup(self):
        c = self.config
        n = c.num_decoder_layers if self.is_decoder else c.num_layers
        self.block = [T5Block(c, self.dtype, self.is_decoder, i == 0) for i in range(n)]
        self.final_layer_norm = T5LayerNorm(c.layer_norm_epsilon, self.dtype)

    def position_bias(self, query_pos, key_pos):
        """The stack's relative position bias, computed once and added by every block (block 0 owns it)."""
        return self.block[0].layer[0].SelfAttention.position_bias(query_pos, key_pos, not self.is_decoder)


class T5(nn.Module):
    config: T5Config
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.config
        init = nn.initializers.normal(1.0)
        self.shared = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype, param_dtype=jnp.float32, embedding_init=init)
        self.encoder = T5Stack(c, self.dtype, is_decoder=False)
        self.decoder = T5Stack(c, self.dtype, is_decoder=True)
        if not c.tie_word_embeddings:
            self.lm_head = _dense(c.vocab_size, 1.0, self.dtype)

    def encode(self, src, src_len):
        """src [B, S] right-padded, src_len [B] → the encoder output [B, S, D] (padding is never a key)."""
        b, s = src.shape
        pos = jnp.arange(s)[None, :]
        bias = self.encoder.position_bias(pos, pos)
        allowed = jnp.broadcast_to((pos < src_len[:, None])[:, None, :], (b, s, s))
        x = self.shared(src)
        for block in self.encoder.block:
            x, _ = block(x, bias, allowed)
        return self.encoder.final_layer_norm(x)

    def cross_cache(self, encoded, src_len, max_len: int) -> CrossCache:
        """Every decoder block's cross-attention K/V of the encoder output, beside an empty self-attention
        cache of max_len slots."""
        c = self.config
        b, s, _ = encoded.shape
        kv = [block.layer[1].EncDecAttention.keys_values(encoded) for block in self.decoder.block]
        return CrossCache(
            self_attn=KVCache.zeros(c.num_decoder_layers, b, max_len, c.num_heads, c.d_kv, self.dtype),
            cross_keys=tuple(k for k, _ in kv),
            cross_values=tuple(v for _, v in kv),
            source_mask=jnp.arange(s)[None, :] < src_len[:, None],
        )

    def decode(self, tokens, positions, cache: CrossCache, window_mask=None) -> ModelOutput:
        """The decoder over a window of T tokens: writes their self-attention K/V, reads the cross K/V."""
        c = self.config
        allowed, key_pos = window_visibility(cache.self_attn, positions, window_mask)
        bias = self.decoder.position_bias(positions, key_pos)
        slots = cache.lengths[:, None] + jnp.arange(tokens.shape[1])[None, :]
        x = self.shared(tokens)
        keys, values = [], []
        for i, block in enumerate(self.decoder.block):
            layer_cache = (cache.self_attn.keys[i], cache.self_attn.values[i])
            cross = (cache.cross_keys[i], cache.cross_values[i], cache.source_mask[:, None, :])
            x, (k, v) = block(x, bias, allowed, layer_cache, slots, cross)
            keys.append(k)
            values.append(v)
        hidden = self.decoder.final_layer_norm(x)
        scaled = hidden * jnp.asarray(c.d_model**-0.5, self.dtype) if c.scale_decoder_outputs else hidden
        logits = self.shared.attend(scaled) if c.tie_word_embeddings else self.lm_head(scaled)
        self_attn = cache.self_attn.replace(keys=tuple(keys), values=tuple(values))
        return ModelOutput(logits.astype(jnp.float32), hidden, cache.replace(self_attn=self_attn))

    def __call__(self, src, src_len, tokens):
        """Teacher-forced logits [B, T, V] of decoder tokens that begin with the decoder start token."""
        b, t = tokens.shape
        cache = self.cross_cache(self.encode(src, src_len), src_len, t)
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        return self.decode(tokens, positions, cache).logits


@dataclasses.dataclass(frozen=True)
class T5Model:
    """A T5-family model as the engine sees it: static config + pure functions of params."""

    config: T5Config
    dtype: str = "float32"  # compute and cache dtype

    is_encoder_decoder = True
    max_positions = None  # relative positions: no length limit of the model's own

    @property
    def module(self) -> T5:
        return T5(self.config, jnp.dtype(self.dtype))

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def describe(self) -> dict:
        """What `jaxspec info` shows of the architecture."""
        c = self.config
        return {
            "architecture": c.architecture,
            "model_type": c.model_type,
            "encoder_layers": c.num_layers,
            "decoder_layers": c.num_decoder_layers,
            "hidden_size": c.d_model,
            "heads": c.num_heads,
            "head_dim": c.d_kv,
            "ff_size": c.d_ff,
            "activation": c.activation,
            "gated_mlp": c.gated,
            "vocab_size": c.vocab_size,
            "position_buckets": c.num_buckets,
            "max_distance": c.max_distance,
            "tied_embeddings": c.tie_word_embeddings,
            "scaled_decoder_outputs": c.scale_decoder_outputs,
        }

    @staticmethod
    def hf_tensor_name(path: tuple[str, ...]) -> str:
        """`decoder/block_0/layer_1/EncDecAttention/q/kernel` → `decoder.block.0.layer.1.EncDecAttention.q.weight`."""
        parts = []
        for m in path[:-1]:
            match = re.fullmatch(r"(block|layer)_(\d+)", m)
            parts.extend(match.groups() if match else [m])
        return ".".join(parts + ["weight"])  # T5 has no biases: every leaf is a weight

    @property
    def hf_aliases(self) -> frozenset[str]:
        """Tensors a checkpoint may hold beyond ours: the stacks' copies of the shared embedding and the
        unused cross-attention position bias that old checkpoints carry."""
        return frozenset(
            {
                "encoder.embed_tokens.weight",
                "decoder.embed_tokens.weight",
                "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
            }
        )

    def for_checkpoint(self, tensor_names: set[str]) -> T5Model:
        """The model that runs this checkpoint: its head is tied exactly when it holds no lm_head.weight, as
        transformers 5 ties it (a head saved anyway, equal to the embedding, computes the same)."""
        tied = "lm_head.weight" not in tensor_names
        return dataclasses.replace(self, config=dataclasses.replace(self.config, tie_word_embeddings=tied))

    def init_params(self, rng: jax.Array):
        src = jnp.zeros((1, 1), jnp.int32)
        return self.module.init(rng, src, jnp.ones((1,), jnp.int32), src)["params"]

    def init_cache(self, batch: int, max_len: int, source_len: int, dtype=None) -> CrossCache:
        """An empty cache: no decoder tokens, and cross K/V of an all-padding source of source_len tokens."""
        c = self.config
        dtype = dtype or jnp.dtype(self.dtype)
        n = c.num_decoder_layers
        return CrossCache(
            self_attn=KVCache.zeros(n, batch, max_len, c.num_heads, c.d_kv, dtype),
            cross_keys=tuple(jnp.zeros((batch, c.num_heads, c.d_kv, source_len), dtype) for _ in range(n)),
            cross_values=tuple(jnp.zeros((batch, c.num_heads, source_len, c.d_kv), dtype) for _ in range(n)),
            source_mask=jnp.zeros((batch, source_len), bool),
        )

    def encode(self, params, src, src_len) -> jax.Array:
        """The encoder output [B, S, D] of right-padded inputs src [B, S] with lengths src_len [B]."""
        return self.module.apply({"params": params}, src, src_len, method=T5.encode)

    def start(self, params, prompts, prompt_len, new_slots: int, constrain=None) -> Start:
        """Runs the encoder once and fills every decoder layer's cross K/V; the decoder starts from its start
        token alone (models/protocol.py). `constrain` pins the whole cache's layout (a mesh's)."""
        b = prompts.shape[0]
        encoded = self.encode(params, prompts, prompt_len)
        cache = self.module.apply({"params": params}, encoded, prompt_len, 1 + new_slots, method=T5.cross_cache)
        if constrain is not None:
            cache = constrain(cache)
        tokens = jnp.full((b, 1), self.config.decoder_start_token_id, jnp.int32)
        return Start(cache, tokens, jnp.ones((b,), jnp.int32), (prompts, prompt_len))

    def forward(self, params, tokens, positions, cache: CrossCache, window_mask=None) -> ModelOutput:
        return self.module.apply({"params": params}, tokens, positions, cache, window_mask, method=T5.decode)

    def output_embedding(self, params) -> jax.Array:
        """[V, D]: the rows the decoder's final hidden state is scored against (before its output scale)."""
        if self.config.tie_word_embeddings:
            return params["shared"]["embedding"]
        return params["lm_head"]["kernel"].T

    def sequence_logits(self, params, decoder_tokens, source, source_len) -> jax.Array:
        """Teacher-forced logits [B, T, V] (training, scoring); decoder_tokens begin with the start token."""
        return self.module.apply({"params": params}, source, source_len, decoder_tokens)
