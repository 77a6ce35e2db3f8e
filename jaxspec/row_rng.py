"""Per-row randomness: every random number a row uses derives from its own seed and the position it is for.

The key for row b, position t (the index in the row's history of the token
being chosen) and purpose s is fold_in(fold_in(key(seed_b), t), s). A row's
draws therefore depend on its seed, its own positions and the method's
purposes only, never on the other rows, the batch size, the prompt bucket or
the row's place in the batch: a prompt decoded in a batch with seed s gives
what it gives decoded alone with seed s.

Purposes (streams) are shared across methods where the draw is the same
draw: the target's token at position t is always drawn from stream TARGET,
so plain sampling and every point-mass rule (which accepts a draft exactly
when it equals that draw) emit the same tokens for the same seed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxspec import vocab_reduce

TARGET = 0  # the target's draw at a position: plain sampling, point-mass acceptance, residual and bonus draws
ACCEPT = 1  # the ratio test's uniform at a drafted position
DRAFT = 2  # a draft model's own draw at a position

MAX_SEED = 2**32 - 1


def keys(seeds: jax.Array, positions: jax.Array, stream: int) -> jax.Array:
    """Keys [B, T] for seeds [B] (uint32) and positions [B, T]."""

    def one(seed, position):
        return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), position), stream)

    return jax.vmap(jax.vmap(one, in_axes=(None, 0)))(seeds, positions)


def categorical(keys_: jax.Array, probs: jax.Array, greedy: bool = False) -> jax.Array:
    """One token per key from probs[..., V] (unnormalised is fine); keys_ has probs' leading shape.

    Under greedy every distribution in play is a point mass, whose only draw is
    its argmax. Otherwise each row is drawn by `_inverse_cdf`, from two uniforms.
    """
    if greedy:
        return vocab_reduce.argmax(probs)
    flat_keys = keys_.reshape(-1)
    flat = probs.reshape(flat_keys.shape[0], probs.shape[-1]).astype(jnp.float32)
    return jax.vmap(_inverse_cdf)(flat_keys, flat).reshape(keys_.shape)


def _inverse_cdf(key: jax.Array, p: jax.Array) -> jax.Array:
    """One draw from p[V] >= 0 by inverting its CDF in two levels: a block of about sqrt(V) ids, then an id in it.

    Why not Gumbel-max (jax.random.categorical): it needs V random numbers a
    row, 7 ms for Gemma's 262,144 ids on a 2-core CPU against 0.15 ms here,
    and a speculative step draws at every verified window row. Why two
    levels: a sequential float32 running sum over V ids adds each id to a
    total near 1 whose ulp is 6e-8, so a long tail of tiny probabilities
    rounds away (XLA's CPU cumsum sums in a tree and keeps it, but takes 1 ms
    a row); summing blocks first keeps every sum to about sqrt(V) terms, with
    any scan order, and an id's chance within its block is exact to the
    block's own precision. A zero-probability id is never returned: where
    rounding lands a draw past the end or on an id without mass, the last id
    with mass is taken (a chance of order 1e-7 a draw).
    """
    v = p.shape[-1]
    width = max(1, math.isqrt(v - 1) + 1)
    blocks = -(-v // width)
    grid = jnp.pad(p, (0, blocks * width - v)).reshape(blocks, width)
    u_block, u_id = jax.random.uniform(key, (2,))
    block = _first_past(grid.sum(axis=-1), u_block)
    return (block * width + _first_past(grid[block], u_id)).astype(jnp.int32)


def _first_past(mass: jax.Array, u: jax.Array) -> jax.Array:
    """The first index whose cumulative mass exceeds u times the total, skipping zero-mass entries."""
    cdf = jnp.cumsum(mass)
    index = jnp.sum(cdf <= u * cdf[-1])
    last_with_mass = mass.shape[0] - 1 - jnp.argmax(mass[::-1] > 0)
    return jnp.where((index < mass.shape[0]) & (mass[jnp.minimum(index, mass.shape[0] - 1)] > 0), index, last_with_mass)


def uniform(keys_: jax.Array) -> jax.Array:
    """One U[0, 1) float32 per key."""
    flat = keys_.reshape(-1)
    return jax.vmap(lambda k: jax.random.uniform(k))(flat).reshape(keys_.shape)


class RowRandom(NamedTuple):
    """The randomness of one decoding step: row seeds and the position each row's window starts at.

    Window index i of row b is history position start[b] + i; a NamedTuple, so it vmaps like any pytree.
    """

    seeds: jax.Array  # [B] uint32
    start: jax.Array  # [B] int32

    def keys(self, stream: int, width: int) -> jax.Array:
        """Keys [B, width] for window indices 0 .. width-1."""
        return keys(self.seeds, self.start[:, None] + jnp.arange(width)[None, :], stream)

    def keys_at(self, stream: int, index: jax.Array) -> jax.Array:
        """Keys [B] for window index index[b] of each row."""
        return keys(self.seeds, (self.start + index)[:, None], stream)[:, 0]

    def keys_for(self, stream: int, index: jax.Array) -> jax.Array:
        """Keys [B, N] for window indices index[b, n] (a tree's nodes: several may share an index)."""
        return keys(self.seeds, self.start[:, None] + index, stream)

    def node_keys(self, stream: int, index: jax.Array) -> jax.Array:
        """Keys [B, T] for tree nodes at window indices index[b, i], distinct per node i even where
        siblings share an index (their ratio tests must be independent)."""
        folded = jax.vmap(lambda row: jax.vmap(jax.random.fold_in)(row, jnp.arange(row.shape[0])))
        return folded(self.keys_for(stream, index))
