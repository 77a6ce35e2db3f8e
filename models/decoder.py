"""The decoder-only transformer shared by Llama, Mistral, Qwen2/3 and Gemma 1/2/3.

`DecoderLM` is a linen module; `CausalLM` is the small frozen object the
decoding engine holds (hashable, so it can be a static argument under jit).
Module and parameter names follow the Hugging Face checkpoints
(`layers_3/self_attn/q_proj/kernel` ↔ `model.layers.3.self_attn.q_proj.weight`)
so conversion is a rename plus a transpose.
"""

from __future__ import annotations

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.config import DecoderConfig
from models.kv_cache import KVCache, write_slots
from models.protocol import ModelOutput, Start, decoder_only_start
from models.rope import apply_rope, inverse_frequencies
from models.skinny_matmul import dense_dot_general, project_rows

_NEG_INF = float(jnp.finfo(jnp.float32).min)
_INIT_STD = 0.02


def activation(name: str):
    if name in ("silu", "swish"):
        return jax.nn.silu
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unknown activation {name!r}")


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
    return x if cap is None else jnp.tanh(x / cap) * cap


class RMSNorm(nn.Module):
    eps: float
    plus_one: bool  # Gemma scales by (1 + w) and starts w at 0.
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros if self.plus_one else nn.initializers.ones
        scale = self.param("scale", init, (x.shape[-1],), jnp.float32)
        xf = x.astype(jnp.float32)
        normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        if self.plus_one:
            return (normed * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)
        # Llama casts back before scaling; in float32 the order does not matter.
        return scale.astype(self.dtype) * normed.astype(self.dtype)


def _dense(features: int, bias: bool, dtype, name: str | None = None) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(_INIT_STD),
        dot_general=dense_dot_general,
        name=name,
    )


class MLP(nn.Module):
    config: DecoderConfig
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        c = self.config
        gate = _dense(c.intermediate_size, c.mlp_bias, self.dtype, "gate_proj")(x)
        up = _dense(c.intermediate_size, c.mlp_bias, self.dtype, "up_proj")(x)
        return _dense(c.hidden_size, c.mlp_bias, self.dtype, "down_proj")(activation(c.activation)(gate) * up)


class Attention(nn.Module):
    config: DecoderConfig
    layer: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, positions, keys, values, slots, allowed):
        c = self.config
        b, t, _ = x.shape
        q = _dense(c.num_heads * c.head_dim, c.qkv_bias, self.dtype, "q_proj")(x)
        k = _dense(c.num_kv_heads * c.head_dim, c.qkv_bias, self.dtype, "k_proj")(x)
        v = _dense(c.num_kv_heads * c.head_dim, c.qkv_bias, self.dtype, "v_proj")(x)
        q = q.reshape(b, t, c.num_heads, c.head_dim)
        k = k.reshape(b, t, c.num_kv_heads, c.head_dim)
        v = v.reshape(b, t, c.num_kv_heads, c.head_dim)
        if c.qk_norm:
            q = RMSNorm(c.rms_norm_eps, c.norm_plus_one, self.dtype, name="q_norm")(q)
            k = RMSNorm(c.rms_norm_eps, c.norm_plus_one, self.dtype, name="k_norm")(k)
        inv_freq = inverse_frequencies(c.rope_for_layer(self.layer), c.head_dim)
        q = apply_rope(q, positions, inv_freq)
        k = apply_rope(k, positions, inv_freq)

        keys = write_slots(keys, slots, k.transpose(0, 2, 3, 1), KVCache.KEY_SLOT_AXIS)
        values = write_slots(values, slots, v.transpose(0, 2, 1, 3), KVCache.VALUE_SLOT_AXIS)
        out = attend(c, q, keys, values, allowed, self.dtype)
        return _dense(c.hidden_size, c.o_bias, self.dtype, "o_proj")(out), keys, values


def attend(config: DecoderConfig, q, keys, values, allowed, dtype):
    """Scaled, soft-capped, masked attention of q [B, T, H, Dh] over head-major keys [B, KVH, Dh, S] and
    values [B, KVH, S, Dh] (models/kv_cache.py), where allowed [B, T, S]: [B, T, H * Dh], before o_proj.

    Shared by causal self-attention over a cache and by encoder-decoder models' other attentions.
    """
    c = config
    b, t = q.shape[:2]
    # Query rows grouped by their KV head (head h uses KV head h // groups, as in HF's repeat_kv).
    groups = c.num_heads // c.num_kv_heads
    qg = q.reshape(b, t, c.num_kv_heads, groups, c.head_dim).transpose(0, 2, 3, 1, 4)
    qg = qg.reshape(b, c.num_kv_heads, groups * t, c.head_dim)
    scores = jnp.einsum("bkqd,bkds->bkqs", qg, keys.astype(dtype)).astype(jnp.float32)
    scores = softcap(scores * c.attn_scale, c.attn_softcap).reshape(b, c.num_kv_heads, groups, t, -1)
    scores = jnp.where(allowed[:, None, None, :, :], scores, _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype).reshape(b, c.num_kv_heads, groups * t, -1)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, values.astype(dtype))
    out = out.reshape(b, c.num_kv_heads, groups, t, c.head_dim).transpose(0, 3, 1, 2, 4)
    return out.reshape(b, t, c.num_heads * c.head_dim)


class DecoderLayer(nn.Module):
    config: DecoderConfig
    layer: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x, positions, keys, values, slots, allowed, runs=(True, True), gates=None):
        """runs: (attention, MLP) computed at all (models/layer_skip.py); gates [2]: the search's dynamic
        multipliers of the two sub-layers' contributions."""
        c = self.config

        def norm(name):
            return RMSNorm(c.rms_norm_eps, c.norm_plus_one, self.dtype, name=name)

        def gated(h, which):
            return h if gates is None else h * gates[which].astype(h.dtype)

        if runs[0]:
            h, keys, values = Attention(c, self.layer, self.dtype, name="self_attn")(
                norm("input_layernorm")(x), positions, keys, values, slots, allowed
            )
            # In Llama-style checkpoints "post_attention_layernorm" is the pre-MLP norm.
            x = x + gated(norm("post_attention_layernorm")(h) if c.sandwich_norms else h, 0)
        if runs[1]:
            if c.sandwich_norms:
                h = norm("post_feedforward_layernorm")(MLP(c, self.dtype, name="mlp")(norm("pre_feedforward_layernorm")(x)))
            else:
                h = MLP(c, self.dtype, name="mlp")(norm("post_attention_layernorm")(x))
            x = x + gated(h, 1)
        return x, keys, values


def window_visibility(cache: KVCache, positions, window_mask):
    """(allowed [B, T, S], key positions [B, S]) for T window tokens over a cache of S slots.

    Slot j of row b is visible to window token i when it is committed
    (j < lengths[b]) or it is window token r = j - lengths[b] and
    window_mask[b, i, r] allows it (causal when window_mask is None).
    Committed slot j holds position j; window slot r holds positions[b, r].
    """
    b, t = positions.shape
    s = cache.max_len
    slots = jnp.arange(s)[None, :]
    lengths = cache.lengths[:, None]
    committed = slots < lengths  # [B, S]
    rel = slots - lengths
    in_window = (rel >= 0) & (rel < t)
    rel_c = jnp.clip(rel, 0, t - 1)
    if window_mask is None:
        window_allowed = rel_c[:, None, :] <= jnp.arange(t)[None, :, None]
    else:
        window_allowed = jnp.take_along_axis(window_mask, jnp.broadcast_to(rel_c[:, None, :], (b, t, s)), axis=2)
    allowed = committed[:, None, :] | (in_window[:, None, :] & window_allowed)
    key_pos = jnp.where(committed, slots, jnp.take_along_axis(positions, rel_c, axis=1))
    return allowed, key_pos


def attention_masks(config: DecoderConfig, cache: KVCache, positions, window_mask):
    """One [B, T, S] visibility mask per distinct sliding window (None = global): window_visibility, and
    on sliding layers also position(i) - position(j) < W."""
    allowed, key_pos = window_visibility(cache, positions, window_mask)
    masks = {}
    for w in set(config.layer_windows):
        if w is None:
            masks[w] = allowed
        else:
            masks[w] = allowed & ((positions[:, :, None] - key_pos[:, None, :]) < w)
    return masks


def decoder_stack(c: DecoderConfig, dtype, x, positions, cache: KVCache, window_mask=None, skip=None, gates=None,
                  tap=None):
    """(hidden after the final norm, cache, tapped) of embeddings x [B, T, D] through the layers `layers_i`
    and the norm `norm`, created in the calling module's scope (so its param names are the caller's).
    tapped: with tap = E, the hidden state after the first E layers through the same norm, which is what
    those layers alone would output (an early exit's); else None.

    Shared by the decoder-only LM and by two-level models' stacks, which feed embeddings, not tokens.
    """
    t = x.shape[1]
    slots = cache.lengths[:, None] + jnp.arange(t)[None, :]
    masks = attention_masks(c, cache, positions, window_mask)
    norm = RMSNorm(c.rms_norm_eps, c.norm_plus_one, dtype, name="norm")
    new_keys, new_values, tapped = [], [], None
    for i in range(c.num_layers):
        if i == tap:
            tapped = norm(x)
        x, k, v = DecoderLayer(c, i, dtype, name=f"layers_{i}")(
            x, positions, cache.keys[i], cache.values[i], slots, masks[c.layer_windows[i]],
            (True, True) if skip is None else skip.runs(i), None if gates is None else gates[:, i],
        )
        new_keys.append(k)
        new_values.append(v)
    return norm(x), cache.replace(keys=tuple(new_keys), values=tuple(new_values)), tapped


class DecoderLM(nn.Module):
    config: DecoderConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self, tokens, positions, cache: KVCache, window_mask=None, skip=None, gates=None, head=True, tap=None
    ) -> ModelOutput:
        """skip: a models.layer_skip.SkipSet of sub-layers not computed; gates [2, L]: dynamic 0/1 weights
        of every sub-layer's contribution (the skip-set search scores candidates with one program);
        head=False: no logits (None), the caller scores the hidden state itself; tap: decoder_stack's."""
        c = self.config
        embed = nn.Embed(
            c.vocab_size,
            c.hidden_size,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            embedding_init=nn.initializers.normal(_INIT_STD),
            name="embed_tokens",
        )
        x = embed(tokens)
        if c.scale_embeddings:
            x = x * jnp.asarray(c.hidden_size**0.5, self.dtype)
        hidden, cache, tapped = decoder_stack(c, self.dtype, x, positions, cache, window_mask, skip, gates, tap)
        if not head and not self.is_initializing():
            return ModelOutput(None, hidden, cache, tapped)
        if c.tie_word_embeddings:
            logits = project_rows(hidden, embed.embedding.astype(hidden.dtype))
        else:
            logits = _dense(c.vocab_size, False, self.dtype, "lm_head")(hidden)
        logits = softcap(logits.astype(jnp.float32), c.final_softcap)
        return ModelOutput(logits, hidden, cache, tapped)


@dataclasses.dataclass(frozen=True)
class CausalLM:
    """A decoder-only model as the engine sees it: static config + pure functions of params."""

    config: DecoderConfig
    dtype: str = "float32"  # compute and cache dtype

    @property
    def module(self) -> DecoderLM:
        return DecoderLM(self.config, jnp.dtype(self.dtype))

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    is_encoder_decoder = False

    @property
    def max_positions(self) -> int | None:
        return self.config.max_position_embeddings

    def describe(self) -> dict:
        """What `jaxspec info` shows of the architecture."""
        c = self.config
        return {
            "architecture": c.architecture,
            "model_type": c.model_type,
            "layers": c.num_layers,
            "hidden_size": c.hidden_size,
            "heads": c.num_heads,
            "kv_heads": c.num_kv_heads,
            "head_dim": c.head_dim,
            "vocab_size": c.vocab_size,
            "sliding_windows": sorted({w for w in c.layer_windows if w is not None}),
            "tied_embeddings": c.tie_word_embeddings,
            "max_positions": c.max_position_embeddings,
        }

    @staticmethod
    def hf_tensor_name(path: tuple[str, ...]) -> str:
        """`layers_3/self_attn/q_proj/kernel` → `model.layers.3.self_attn.q_proj.weight`."""
        *modules, leaf = path
        parts = []
        for m in modules:
            parts.extend(m.rsplit("_", 1) if re.fullmatch(r"layers_\d+", m) else [m])
        parts.append("bias" if leaf == "bias" else "weight")
        name = ".".join(parts)
        return name if modules[0] == "lm_head" else "model." + name

    @property
    def hf_aliases(self) -> frozenset[str]:
        """Tensors a checkpoint may hold beyond ours: a tied head saved anyway."""
        return frozenset({"lm_head.weight"}) if self.config.tie_word_embeddings else frozenset()

    def for_checkpoint(self, tensor_names: set[str]) -> CausalLM:
        """The config alone decides this family's layout."""
        return self

    def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
        c = self.config
        return KVCache.zeros(c.num_layers, batch, max_len, c.num_kv_heads, c.head_dim, dtype or jnp.dtype(self.dtype))

    def init_params(self, rng: jax.Array):
        tokens = jnp.zeros((1, 1), jnp.int32)
        return self.module.init(rng, tokens, tokens, self.init_cache(1, 1))["params"]

    def forward(
        self, params, tokens, positions, cache: KVCache, window_mask=None, skip=None, gates=None, vocab=None,
        head=True, tap=None,
    ) -> ModelOutput:
        """skip / gates: sub-layers left out (models/layer_skip.py); the full model without them. vocab
        [B, N] token ids: logits [B, T, N] for those ids only, reading N rows of the head instead of V.
        head=False: no logits (None). tap = E: ModelOutput.tapped, the hidden state after layer E, normed."""
        module = self.module
        if vocab is None and head:
            return module.apply({"params": params}, tokens, positions, cache, window_mask, skip, gates, True, tap)
        out = module.apply({"params": params}, tokens, positions, cache, window_mask, skip, gates, False, tap)
        return out._replace(logits=self.score(params, out.hidden, vocab) if head else None)

    def score(self, params, hidden, vocab=None) -> jax.Array:
        """Logits float32 [B, T, V] of normed hidden states [B, T, D] through the head, or [B, T, N] over
        the ids vocab [B, N] only."""
        if vocab is None:
            rows = self.output_embedding(params).astype(hidden.dtype)
            logits = project_rows(hidden, rows)
        else:
            rows = self.output_embedding(params)[vocab].astype(hidden.dtype)  # [B, N, D]
            logits = jnp.einsum("btd,bnd->btn", hidden, rows)
        return softcap(logits.astype(jnp.float32), self.config.final_softcap)

    def start(self, params, prompts, prompt_len, new_slots: int, constrain=None, tap=None) -> Start:
        return decoder_only_start(self, params, prompts, prompt_len, new_slots, constrain, tap)

    def output_embedding(self, params) -> jax.Array:
        """[V, D]: the rows the final hidden state is scored against (before the logit softcap)."""
        if self.config.tie_word_embeddings:
            return params["embed_tokens"]["embedding"]
        return params["lm_head"]["kernel"].T

    def sequence_logits(self, params, tokens) -> jax.Array:
        """Causal logits [B, T, V] for whole sequences (training, scoring): a throwaway cache of length T."""
        b, t = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        return self.forward(params, tokens, positions, self.init_cache(b, t)).logits
