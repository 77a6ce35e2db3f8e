"""Kangaroo's early exit (Liu et al. 2024): the target's first E layers, then a small trained adapter, then
the target's own head.

The adapter is one attention layer with no MLP, over the target's normed
hidden state at the exit, h_E: a = h_E + Attn(RMSNorm(h_E)), scored through
the target's output embedding (read-only, as Medusa heads are). Its output
projection starts at zero, so an untrained adapter drafts exactly as plain
early exit ("exit:E" in models/layer_skip.py) does, and training can only
add what the skipped layers knew. The attention is the adapter's own
(`attention_heads` heads of hidden_size / attention_heads, RoPE of base
10000, attending to every earlier position), with a one-layer
cache of its own: its keys and values depend on h_E at each position,
which the target's cache does not hold.

The adapter's config is a heads config (models/medusa.py, kind "kangaroo")
and it is saved and loaded as a heads directory (jaxspec/heads_io.py).
`ExitDraftModel` composes it with the target for drafting: the target's
shallow layers run on the target's own cache, the adapter on its own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from models.config import RopeConfig
from models.decoder import RMSNorm, attend, window_visibility
from models.kv_cache import KVCache, write_slots
from models.layer_skip import SkipSet
from models.medusa import HeadsConfig
from models.protocol import ModelOutput
from models.rope import apply_rope, inverse_frequencies

KANGAROO = "kangaroo"
ADAPTER_NORM_EPS = 1e-6
ADAPTER_ROPE = RopeConfig()  # the adapter's own attention: base 10000, unscaled


class _Shape(NamedTuple):
    """What `attend` reads of a config."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    attn_scale: float
    attn_softcap: float | None = None


def _shape(config: HeadsConfig) -> _Shape:
    head_dim = config.hidden_size // config.attention_heads
    return _Shape(config.attention_heads, config.attention_heads, head_dim, head_dim**-0.5)


class AdapterModule(nn.Module):
    config: HeadsConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, positions, keys, values, slots, allowed):
        """x [B, T, D] (h_E) -> (a [B, T, D], keys, values) with this window's K/V written at `slots`, or
        appended after the given ones where `slots` is None (training: no scatter to differentiate)."""
        shape = _shape(self.config)
        b, t, d = x.shape

        def dense(name, init=nn.initializers.lecun_normal()):
            return nn.Dense(d, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=init, name=name)

        y = RMSNorm(ADAPTER_NORM_EPS, False, self.dtype, name="input_layernorm")(x.astype(self.dtype))
        q, k, v = (dense(n)(y).reshape(b, t, shape.num_heads, shape.head_dim) for n in ("q_proj", "k_proj", "v_proj"))
        inv_freq = inverse_frequencies(ADAPTER_ROPE, shape.head_dim)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        k, v = k.transpose(0, 2, 3, 1).astype(keys.dtype), v.transpose(0, 2, 1, 3).astype(values.dtype)
        if slots is None:
            keys = jnp.concatenate([keys, k], axis=KVCache.KEY_SLOT_AXIS)
            values = jnp.concatenate([values, v], axis=KVCache.VALUE_SLOT_AXIS)
        else:
            keys = write_slots(keys, slots, k, KVCache.KEY_SLOT_AXIS)
            values = write_slots(values, slots, v, KVCache.VALUE_SLOT_AXIS)
        out = attend(shape, q, keys, values, allowed, self.dtype)
        return x + dense("o_proj", nn.initializers.zeros)(out), keys, values


@dataclasses.dataclass(frozen=True)
class ExitAdapter:
    """The adapter as the drafter, the trainer and heads_io see it: static config + pure functions."""

    config: HeadsConfig
    dtype: str = "float32"

    @property
    def module(self) -> AdapterModule:
        return AdapterModule(self.config, jnp.dtype(self.dtype))

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        shape = _shape(self.config)
        return KVCache.zeros(1, batch, max_len, shape.num_kv_heads, shape.head_dim, jnp.dtype(self.dtype))

    def init_params(self, rng: jax.Array):
        x = jnp.zeros((1, 1, self.config.hidden_size), jnp.float32)
        positions = jnp.zeros((1, 1), jnp.int32)
        cache = self.init_cache(1, 1)
        allowed, _ = window_visibility(cache, positions, None)
        return self.module.init(rng, x, positions, cache.keys[0], cache.values[0], positions, allowed)["params"]

    def apply(self, params, hidden, positions, cache: KVCache) -> tuple[jax.Array, KVCache]:
        """hidden [B, T, D] at `positions`, written past cache.lengths -> (a [B, T, D], the cache with the
        window's K/V written; lengths unchanged: the caller commits)."""
        t = hidden.shape[1]
        slots = cache.lengths[:, None] + jnp.arange(t)[None, :]
        allowed, _ = window_visibility(cache, positions, None)
        a, keys, values = self.module.apply({"params": params}, hidden, positions, cache.keys[0], cache.values[0], slots, allowed)
        return a, cache.replace(keys=(keys,), values=(values,))

    @staticmethod
    def tensor_name(path: tuple[str, ...]) -> str:
        """`q_proj/kernel` -> `q_proj.kernel` (saved as is: no transposes)."""
        return ".".join(path)


@struct.dataclass
class ExitCaches:
    """The target's cache (its shallow layers written while drafting) and the adapter's, in step."""

    target: KVCache
    adapter: KVCache

    @property
    def lengths(self) -> jax.Array:
        return self.target.lengths

    def commit(self, n: jax.Array) -> "ExitCaches":
        return ExitCaches(self.target.commit(n), self.adapter.commit(n))

    def with_lengths(self, lengths: jax.Array) -> "ExitCaches":
        return ExitCaches(self.target.with_lengths(lengths), self.adapter.with_lengths(lengths))


@dataclasses.dataclass(frozen=True)
class ExitDraftModel:
    """The target's first `adapter.config.exit_layer` layers, the adapter and the target's head, on
    params {"target": the target's, "adapter": the adapter's} (nothing copied)."""

    target: Any  # a CausalLM
    adapter: ExitAdapter

    @property
    def vocab_size(self) -> int:
        return self.target.vocab_size

    @property
    def skip(self) -> SkipSet:
        return SkipSet.exit_after(self.adapter.config.exit_layer, self.target.config.num_layers)

    @staticmethod
    def caches(target: KVCache, adapter: KVCache) -> ExitCaches:
        return ExitCaches(target, adapter)

    def exit_hidden(self, target_params, tokens, positions, cache: KVCache) -> ModelOutput:
        """h_E (the target's normed hidden state after the exit layer) and the target cache with the shallow
        layers' K/V written; no logits."""
        return self.target.forward(target_params, tokens, positions, cache, skip=self.skip, head=False)

    def forward(self, params, tokens, positions, caches: ExitCaches, vocab=None) -> ModelOutput:
        """Logits [B, T, V] (or over the ids `vocab` [B, N]), a, and both caches."""
        out = self.exit_hidden(params["target"], tokens, positions, caches.target)
        a, adapter_cache = self.adapter.apply(params["adapter"], out.hidden, positions, caches.adapter)
        return ModelOutput(self.target.score(params["target"], a, vocab), a, ExitCaches(out.cache, adapter_cache))
