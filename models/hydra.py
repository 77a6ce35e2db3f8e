"""Hydra draft heads (Ankner et al. 2024): sequentially dependent heads over the target's hidden state.

Medusa's head k guesses the token k + 1 places after the last emitted one
from the target's hidden state alone, so its guess cannot depend on what the
earlier heads guessed. Hydra's head k also reads the embeddings of the
tokens before its guess: with f the feature at the last emitted token's
predecessor (the state whose logits gave that token) and x_1 the last
emitted token, head k maps [f, e(x_1), .., e(x_{k+1})] ((k + 2) · D wide) to
a feature scored against the target's output embedding, and x_2 .. x_{k+1}
are the drafts on the path it extends. A tree is then drafted depth by depth,
each depth's head run once per node it expands (jaxspec/drafters/hydra.py).

Each head is Hydra's MLP: a first block y = R x + SiLU(W x + b) that maps the
wide input to D (R a learned projection, Hydra's "residual connection"),
then `num_layers - 1` of Medusa's ResBlocks, then the target's output
embedding (read-only, as for Medusa heads, so a heads directory holds no
vocabulary-sized matrix). R starts as the identity on f and zero on the
embeddings and W at zero, so an untrained Hydra head guesses what an
untrained Medusa head does (the target's own next token) and training adds
what the drafted tokens tell it. Token embeddings are the target's output
embedding rows (its input embedding where they are tied), RMS-normalised
without a learned scale so that the input's parts have one scale whatever the
family's embedding scale.

Hydra++ puts a prefix-attention layer before the heads: f is then the output
of one attention layer over the target's hidden states of every earlier
position, not the last one alone. Here that layer is the exit adapter's
attention (models/early_exit.py: RMSNorm, attention with its own RoPE, an
output projection starting at zero, a residual), with a one-layer cache of its
own; it is present when the heads config sets `attention_heads`. Hydra's
prefix layer is a whole decoder layer (attention and MLP); its MLP is left out
here because the heads' MLPs follow at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.early_exit import ExitAdapter
from models.kv_cache import KVCache
from models.medusa import HeadsConfig, MedusaHeads, ResBlock
from models.stacks import arange_rows

HYDRA = "hydra"
EMBEDDING_NORM_EPS = 1e-6


def _identity_on_feature(key, shape, dtype=jnp.float32):
    """R's start: [(k + 2) D, D] passing f (the first D inputs) through and ignoring the embeddings."""
    del key
    width, d = shape
    return jnp.eye(width, d, dtype=dtype)


class HydraHead(nn.Module):
    """Head k: [..., (k + 2) D] -> [..., D]."""

    config: HeadsConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = self.config.hidden_size
        x = x.astype(self.dtype)
        res = nn.Dense(d, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=_identity_on_feature,
                       name="res_proj")(x)
        w = nn.Dense(d, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=nn.initializers.zeros, name="res_block")
        y = res + nn.silu(w(x))
        for i in range(1, self.config.num_layers):
            y = ResBlock(self.dtype, name=f"block_{i}")(y)
        return y


@dataclasses.dataclass(frozen=True)
class HydraHeads:
    """Hydra heads as the drafter and the trainer see them: static config + pure functions of params
    {"head_k": ..., "prefix": the prefix layer's, when there is one}."""

    config: HeadsConfig
    dtype: str = "float32"

    @property
    def prefix(self) -> ExitAdapter | None:
        """Hydra++'s prefix-attention layer, or None for plain Hydra heads."""
        return ExitAdapter(self.config, self.dtype) if self.config.attention_heads else None

    def _head(self) -> HydraHead:
        return HydraHead(self.config, jnp.dtype(self.dtype))

    def init_params(self, rng: jax.Array):
        c = self.config
        keys = jax.random.split(rng, c.num_heads + 1)
        params = {
            f"head_{k}": self._head().init(keys[k], jnp.zeros((1, (k + 2) * c.hidden_size), jnp.float32))["params"]
            for k in range(c.num_heads)
        }
        if self.prefix is not None:
            params["prefix"] = self.prefix.init_params(keys[-1])
        return params

    def head_features(self, params, k: int, x) -> jax.Array:
        """Head k on its input [..., (k + 2) D] -> [..., D]."""
        return self._head().apply({"params": params[f"head_{k}"]}, x)

    @staticmethod
    def logits(features, rows) -> jax.Array:
        """features [..., D] against the output embedding's rows [N, D] -> [..., N]."""
        return MedusaHeads.logits(features[..., None, :], rows)[..., 0, :]

    @staticmethod
    def token_inputs(table, tokens) -> jax.Array:
        """The heads' embedding of target ids [...] -> [..., D]: rows of the target's output embedding, RMS-normalised."""
        rows = table[tokens].astype(jnp.float32)
        return rows * jax.lax.rsqrt(jnp.mean(rows * rows, axis=-1, keepdims=True) + EMBEDDING_NORM_EPS)

    def init_prefix_cache(self, batch: int, max_len: int) -> KVCache | None:
        return None if self.prefix is None else self.prefix.init_cache(batch, max_len)

    def features(self, params, hidden, positions, cache: KVCache | None) -> tuple[jax.Array, KVCache | None]:
        """f at each of hidden [B, T, D] (the target's final hidden states at `positions`, written past
        cache.lengths; lengths unchanged): the hidden states themselves without a prefix layer."""
        if self.prefix is None:
            return hidden.astype(jnp.float32), cache
        f, cache = self.prefix.apply(params["prefix"], hidden, positions, cache)
        return f.astype(jnp.float32), cache

    def training_logits(self, params, hidden, tokens, table, rows) -> jax.Array:
        """Teacher-forced logits [B, T, K, N] over the target's hidden states [B, T, D] of `tokens` [B, T]:
        head k at t reads f_t and the embeddings of tokens t + 1 .. t + k + 1 (the text's own, zeros past
        its end) and guesses token t + k + 2; scored against `rows` [N, D] (a draft vocabulary's rows)."""
        b, t, _ = hidden.shape
        f, _ = self.features(params, hidden, arange_rows(b, t), self.init_prefix_cache(b, t))
        e = jnp.pad(self.token_inputs(table, tokens), ((0, 0), (0, self.config.num_heads), (0, 0)))
        out = []
        for k in range(self.config.num_heads):
            x = jnp.concatenate([f] + [e[:, 1 + j : 1 + j + t] for j in range(k + 1)], axis=-1)
            out.append(self.head_features(params, k, x))
        return MedusaHeads.logits(jnp.stack(out, axis=-2), rows)

    tensor_name = staticmethod(MedusaHeads.tensor_name)
