"""An EAGLE-style feature drafter (Li et al. 2024): one decoder layer, autoregressive over the target's features.

The target's final hidden state f_i at position i gives token x_{i+1} through
its own head. The drafter reads the pair (f_i, e(x_{i+1})) at position i,
fuses it to the hidden width (EAGLE's `fc` over [e, f]), runs one decoder
layer (attention over the pairs of every earlier position, then an MLP) and
outputs g_i, a guess at f_{i+1}: scored against the target's output
embedding (read-only, as Medusa heads are) it gives a distribution over
x_{i+2}. Drafting further feeds g back as the next pair's feature, so one
layer drafts to any depth with a cache of its own (one K/V entry per pair).

Training (train/heads.py) unrolls the drafter as decoding runs it, EAGLE-3's
"training-time test": step 0 reads the target's true features and step k > 0
the drafter's own step-(k - 1) outputs, and step k's query at position t sees
the true pairs up to t and its own earlier steps' pairs at t, just as a depth
k + 1 tree node sees the committed pairs and its ancestors
(jaxspec/drafters/eagle.py). `num_heads` is the number of steps trained, the
deepest the drafter drafts; step k is "head k" in the heads trainer's
metrics, so the measured accuracies feed tree sizing as Medusa's do.

The attention is the exit adapter's (models/early_exit.py: RMSNorm, its own
RoPE, an output projection starting at zero, a residual), so `attention_heads`
is required; the MLP is gated (SiLU) at twice the hidden width, with its own
norm and a zero-initialised down projection; a final RMSNorm puts g on the
scale of the target's normed features. Token embeddings are the target's
output embedding rows RMS-normalised (models/hydra.py), so the directory holds
no vocabulary-sized matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.decoder import RMSNorm, window_visibility
from models.early_exit import ADAPTER_NORM_EPS, AdapterModule, ExitAdapter
from models.hydra import HydraHeads
from models.kv_cache import KVCache
from models.medusa import HeadsConfig, MedusaHeads
from models.stacks import arange_rows

EAGLE = "eagle"
MLP_RATIO = 2  # the MLP's hidden width over the model's


class EagleLayer(nn.Module):
    config: HeadsConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature, token, positions, keys, values, slots, allowed):
        """Pairs (feature [B, T, D], token embedding [B, T, D]) at `positions` -> (g [B, T, D], keys, values)
        with the pairs' K/V written at `slots` and attention over the slots `allowed` [B, T, S]."""
        d = self.config.hidden_size

        def dense(width, name, init=nn.initializers.lecun_normal()):
            return nn.Dense(width, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=init,
                            name=name)

        x = dense(d, "fc")(jnp.concatenate([token, feature], axis=-1).astype(self.dtype))
        x, keys, values = AdapterModule(self.config, self.dtype, name="attention")(
            x, positions, keys, values, slots, allowed)
        y = RMSNorm(ADAPTER_NORM_EPS, False, self.dtype, name="mlp_layernorm")(x)
        gate, up = dense(MLP_RATIO * d, "gate_proj")(y), dense(MLP_RATIO * d, "up_proj")(y)
        x = x + dense(d, "down_proj", nn.initializers.zeros)(nn.silu(gate) * up)
        return RMSNorm(ADAPTER_NORM_EPS, False, self.dtype, name="norm")(x), keys, values


@dataclasses.dataclass(frozen=True)
class EagleHeads:
    """The drafter as decoding and training see it: static config + pure functions of params."""

    config: HeadsConfig
    dtype: str = "float32"

    @property
    def module(self) -> EagleLayer:
        return EagleLayer(self.config, jnp.dtype(self.dtype))

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        return ExitAdapter(self.config, self.dtype).init_cache(batch, max_len)

    def init_params(self, rng: jax.Array):
        d = self.config.hidden_size
        x = jnp.zeros((1, 1, d), jnp.float32)
        positions = jnp.zeros((1, 1), jnp.int32)
        cache = self.init_cache(1, 1)
        allowed, _ = window_visibility(cache, positions, None)
        return self.module.init(rng, x, x, positions, cache.keys[0], cache.values[0], positions, allowed)["params"]

    def step(self, params, feature, token, positions, keys, values, slots, allowed):
        """One application of the layer (EagleLayer.__call__) on raw cache arrays: tree drafting's masks."""
        return self.module.apply({"params": params}, feature, token, positions, keys, values, slots, allowed)

    def extend(self, params, feature, token, cache: KVCache) -> tuple[jax.Array, KVCache]:
        """Pairs [B, T, D] at the positions cache.lengths + 0 .. T-1, causal over the committed pairs and each
        other -> (g, the cache with their K/V written past its lengths; lengths unchanged: the caller commits)."""
        t = feature.shape[1]
        slots = cache.lengths[:, None] + jnp.arange(t)[None, :]
        allowed, _ = window_visibility(cache, slots, None)
        g, keys, values = self.step(params, feature, token, slots, cache.keys[0], cache.values[0], slots, allowed)
        return g, cache.replace(keys=(keys,), values=(values,))

    logits = staticmethod(HydraHeads.logits)
    token_inputs = staticmethod(HydraHeads.token_inputs)
    tensor_name = staticmethod(MedusaHeads.tensor_name)

    def training_logits(self, params, hidden, tokens, table, rows) -> jax.Array:
        """Teacher-forced logits [B, T, K, N] of K unrolled steps over the target's hidden states [B, T, D] of
        `tokens` [B, T]: step k at t reads (step k - 1's output at t, or f_t for k = 0; the embedding of token
        t + k + 1, zeros past the text) at position t + k, sees the true pairs 0 .. t and steps 1 .. k at t,
        and guesses token t + k + 2; scored against `rows` [N, D] (a draft vocabulary's rows)."""
        b, t, _ = hidden.shape
        k_steps = self.config.num_heads
        e = jnp.pad(self.token_inputs(table, tokens), ((0, 0), (0, k_steps), (0, 0)))
        cache = self.init_cache(b, 0)  # each step appends its pairs' K/V: step k's are slots k T .. (k + 1) T
        keys, values = cache.keys[0], cache.values[0]
        query = jnp.arange(t)[:, None]
        feature, out = hidden.astype(jnp.float32), []
        for k in range(k_steps):
            slot = jnp.arange((k + 1) * t)[None, :]
            # Step 0's causal block, then steps 1 .. k at the same t.
            allowed = jnp.broadcast_to(((slot < t) & (slot <= query)) | ((slot >= t) & (slot % t == query)),
                                       (b, t, (k + 1) * t))
            feature, keys, values = self.step(params, feature, e[:, 1 + k : 1 + k + t], arange_rows(b, t) + k,
                                              keys, values, None, allowed)
            out.append(feature)
        return MedusaHeads.logits(jnp.stack(out, axis=-2), rows)
