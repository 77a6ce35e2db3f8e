"""A per-row draft vocabulary taken from the text at hand: what lets a self-drafter skip most of the head.

On a large-vocabulary model the head dominates a forward's weights (Gemma 3
270M: 168M of its 268M parameters are the 262,144 x 640 embedding it scores
against), so a draft that runs fewer layers still pays for the whole head. Yet
the tokens a model emits are mostly ones the context already holds: over the
real-text prompts of bench/prompts/real/, 92-100% of Gemma 3's greedy
continuation tokens (81% on rewriting) occur in the prompt or among its own
argmax predictions over it. So each row drafts only over its own N ids: the
prompt's tokens, then every token the target predicts or emits, in order of
appearance, until N are held. Scoring reads N rows of the head instead of V.

Exactness does not depend on the choice: a draft distribution q that is zero
outside the subset is still a distribution, and the ratio rule is lossless for
any q; greedy drafts are the argmax over the subset, checked like any other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ContextVocab:
    ids: jax.Array  # [B, N] int32: held ids first, then copies of ids[:, 0] (a repeat scores the same)
    held: jax.Array  # [B, V] bool
    count: jax.Array  # [B] int32 distinct ids held

    @classmethod
    def empty(cls, batch: int, size: int, vocab: int) -> "ContextVocab":
        return cls(jnp.zeros((batch, size), jnp.int32), jnp.zeros((batch, vocab), bool), jnp.zeros((batch,), jnp.int32))

    def add(self, tokens: jax.Array, valid: jax.Array) -> "ContextVocab":
        """Adds tokens [B, M] where valid [B, M], in order, while room remains (one at a time, so that a
        token repeated within `tokens` is held once)."""
        b, size = self.ids.shape
        rows = jnp.arange(b)

        def one(j, v):
            token = tokens[:, j]
            new = valid[:, j] & ~v.held[rows, token] & (v.count < size)
            ids = v.ids.at[rows, jnp.where(new, v.count, size)].set(token, mode="drop")
            # Until a slot is filled it repeats the first id (the first add fills slot 0 of every row).
            ids = jnp.where(jnp.arange(size)[None, :] >= v.count[:, None] + new[:, None], ids[:, :1], ids)
            return ContextVocab(ids, v.held.at[rows, token].set(v.held[rows, token] | new), v.count + new)

        return jax.lax.fori_loop(0, tokens.shape[1], one, self)

    def full_logits(self, logits: jax.Array) -> jax.Array:
        """[B, V] logits from [B, N] ones over ids: -inf outside the subset."""
        b, v = self.held.shape
        return jnp.full((b, v), -jnp.inf, logits.dtype).at[jnp.arange(b)[:, None], self.ids].set(logits)
