"""Lookahead decoding (Fu et al. 2024): Jacobi trajectories feed an n-gram pool, verified in the same forward.

With n-gram size N (`levels`), a window of W columns and a pool of G n-grams
per key, every step's tree holds two branches under the last emitted token:

- the lookahead branch: N - 1 levels of W guesses each, the last N - 1 Jacobi
  iterates. Level l's guess at column j (depth j, columns l+1 .. l+W) hangs
  under level l-1's guess at column j-1, and level 0 is a chain from the root,
  so each guess sees the prefix along its own diagonal trajectory, the
  attention pattern of the reference implementation, as a plain tree;
- the verification branch: the pool's n-grams that start with the last emitted
  token, most recently seen first, each a chain of N - 1 tokens.

The target's token after each top-level guess is the next level. Column k of
the levels plus that token is an n-gram (its first token is the key), so each
step adds W n-grams to the pool; then the levels shift down by one and the new
tokens become the top level: the window moves one column a step whatever was
accepted (the reference's ALWAYS_FWD_ONE), so shapes are static for free.
Guesses start as tokens of the prompt, taken evenly through it (the reference
draws them at random from the prompt; any start converges, its issue #8).

The pool is per row: B x buckets x G entries of (key, N - 1 tokens, last use).
An n-gram goes to bucket key mod buckets; one already there is refreshed,
else it replaces the least recently used entry of the bucket (the reference's
per-key LRU of G, with keys that share a bucket sharing its G entries).

Every node is a point-mass draft, so the tree rule keeps decoding lossless
under sampling, and nodes of either branch may be accepted. The levels advance
with the target's argmax, as the reference's do under sampling too.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec.drafters.base import Context, Verified, argmax_rows, static_tree_draft


@functools.lru_cache(maxsize=None)
def topology(window: int, levels: int, pool: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(parents, window_nodes, pool_nodes): window_nodes[l * W + k] is the node of level l's guess at
    column l + 1 + k; pool_nodes[g * (N - 1) + d] the node of the g-th pool match's token d + 1."""
    nodes = [(l + 1 + k, 0, l, k) for l in range(levels - 1) for k in range(window)]  # (depth, branch, ...)
    nodes += [(d + 1, 1, g, d) for g in range(pool) for d in range(levels - 1)]
    nodes.sort()
    index = {node[1:]: i for i, node in enumerate(nodes)}

    def parent(branch, a, b):
        if branch == 0:  # level a, offset b: under level a-1 at the column before, or level 0's previous guess
            up = (0, a - 1, b) if a > 0 else (0, 0, b - 1)
            return index[up] if a > 0 or b > 0 else -1
        return index[(1, a, b - 1)] if b > 0 else -1

    parents = tuple(parent(*node[1:]) for node in nodes)
    window_nodes = tuple(index[(0, l, k)] for l in range(levels - 1) for k in range(window))
    pool_nodes = tuple(index[(1, g, d)] for g in range(pool) for d in range(levels - 1))
    return parents, window_nodes, pool_nodes


@struct.dataclass
class LookaheadState:
    levels: jax.Array  # [B, N - 1, W] int32: levels[b, l, k] is level l's guess at column l + 1 + k
    keys: jax.Array  # [B, S, G] int32: each pool entry's first token, -1 where empty
    grams: jax.Array  # [B, S, G, N - 1] int32: the tokens after the key
    used: jax.Array  # [B, S, G] int32: when the entry was last added or refreshed, -1 where empty
    clock: jax.Array  # [B] int32


@dataclasses.dataclass(frozen=True)
class Lookahead:
    window: int = 5  # W
    levels: int = 4  # N: the n-gram size; the window has N - 1 levels
    pool: int = 5  # G: n-grams verified per step, and kept per bucket
    buckets: int = 4096

    @property
    def num_draft_tokens(self) -> int:
        return (self.window + self.pool) * (self.levels - 1)

    def init(self, params, prompts, prompt_len, new_slots, start):
        tokens, lengths = start.tokens, start.lengths
        b, n = tokens.shape[0], self.levels - 1
        spread = (jnp.arange(n * self.window) + 0.5) / (n * self.window)  # evenly through each prompt
        pick = jnp.minimum((spread[None, :] * lengths[:, None]).astype(jnp.int32), lengths[:, None] - 1)
        levels = jnp.take_along_axis(tokens, pick, axis=1).reshape(b, n, self.window)
        shape = (b, self.buckets, self.pool)
        return LookaheadState(
            levels=levels,
            keys=jnp.full(shape, -1, jnp.int32),
            grams=jnp.zeros((*shape, n), jnp.int32),
            used=jnp.full(shape, -1, jnp.int32),
            clock=jnp.zeros((b,), jnp.int32),
        )

    def propose(self, params, state: LookaheadState, ctx: Context):
        parents, window_nodes, pool_nodes = topology(self.window, self.levels, self.pool)
        b, t = ctx.seq_len.shape[0], len(parents)
        rows = jnp.arange(b)
        root = ctx.history[rows, ctx.seq_len - 1]
        bucket = root % self.buckets
        found = state.keys[rows, bucket] == root[:, None]  # [B, G]
        order = jnp.argsort(jnp.where(found, -state.used[rows, bucket], 1), axis=1)  # most recent first
        grams = jnp.take_along_axis(state.grams[rows, bucket], order[:, :, None], axis=1)  # [B, G, N - 1]
        found = jnp.take_along_axis(found, order, axis=1)
        tokens = jnp.zeros((b, t), jnp.int32)
        tokens = tokens.at[:, jnp.asarray(window_nodes)].set(state.levels.reshape(b, -1))
        tokens = tokens.at[:, jnp.asarray(pool_nodes)].set(grams.reshape(b, -1))
        valid = jnp.ones((b, t), bool)
        valid = valid.at[:, jnp.asarray(pool_nodes)].set(jnp.repeat(found, self.levels - 1, axis=1))
        valid &= ~ctx.done[:, None]
        return static_tree_draft(parents, tokens, valid), state

    row_summary = staticmethod(argmax_rows)

    def update(self, params, state: LookaheadState, ctx: Context, verified: Verified):
        """The next level from the top level's outputs; W new n-grams into the pool; the levels shift."""
        _, window_nodes, _ = topology(self.window, self.levels, self.pool)
        n = self.levels - 1
        top = jnp.asarray(window_nodes[(n - 1) * self.window:]) + 1  # window indices of the top level
        out = verified.summary[0][:, top]  # [B, W]: the target's argmax after the top level
        columns = jnp.concatenate([state.levels, out[:, None, :]], axis=1)  # [B, N, W]: column k is an n-gram
        active = verified.scored[:, 0]

        def add(k, pool):
            keys, grams, used, clock = pool
            key, gram = columns[:, 0, k], columns[:, 1:, k]
            rows = jnp.arange(key.shape[0])
            bucket = key % self.buckets
            same = (keys[rows, bucket] == key[:, None]) & jnp.all(grams[rows, bucket] == gram[:, None, :], axis=2)
            slot = jnp.where(jnp.any(same, axis=1), jnp.argmax(same, axis=1), jnp.argmin(used[rows, bucket], axis=1))
            bucket = jnp.where(active, bucket, self.buckets)  # a finished row adds nothing: dropped
            return (
                keys.at[rows, bucket, slot].set(key, mode="drop"),
                grams.at[rows, bucket, slot].set(gram, mode="drop"),
                used.at[rows, bucket, slot].set(clock, mode="drop"),
                clock + active,
            )

        keys, grams, used, clock = jax.lax.fori_loop(
            0, self.window, add, (state.keys, state.grams, state.used, state.clock)
        )
        return LookaheadState(columns[:, 1:], keys, grams, used, clock)
