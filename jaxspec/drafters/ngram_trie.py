"""An adaptive n-gram trie in the spirit of ADED (Liu et al. 2024): successors of the last two tokens, by count.

Each row keeps a hashed table of buckets: bucket(a, b) holds up to k tokens
seen after the pair (a, b) with decayed counts. The prompt fills it, every
emitted token adds one count to its slot (the least counted slot gives way to
a new token, the lowest index among equals), and each step multiplies all
counts by `decay`, so recent text outweighs old. A draft walks a static tree
template: a depth-d node of rank r takes the r-th most counted successor of
(grandparent token, parent token), the root's pair being the last two emitted
tokens; a node whose slot was never filled is not drafted. Drafts are point
masses (lossless under the point-mass tree rule).

Where ADED's table also starts from a corpus and its tree grows by a Monte
Carlo search, this one learns from the row's own text only (nothing to
download or ship) and uses the static template, so one gather per depth
drafts the tree. The hash of a pair may collide with another pair's: that
costs acceptance, never exactness.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec.drafters.base import Context, Verified, static_tree_draft
from jaxspec.static_tree import StaticTree


@struct.dataclass
class TrieState:
    tokens: jax.Array  # [B, N, k] int32: successors of each bucket
    counts: jax.Array  # [B, N, k] float32: their decayed counts (0: an empty slot)
    seen: jax.Array  # [B] int32: history tokens counted so far


@dataclasses.dataclass(frozen=True)
class NgramTrie:
    tree: StaticTree  # node ranks < width
    buckets: int = 4096
    width: int = 8  # k: successors kept per pair
    decay: float = 0.98

    @property
    def num_draft_tokens(self) -> int:
        return self.tree.size

    def bucket(self, a: jax.Array, b: jax.Array) -> jax.Array:
        mixed = a.astype(jnp.uint32) * jnp.uint32(0x9E3779B1) ^ b.astype(jnp.uint32) * jnp.uint32(0x85EBCA77)
        return (mixed % jnp.uint32(self.buckets)).astype(jnp.int32)

    def _add(self, state: TrieState, a, b, token, ok) -> TrieState:
        """One count for `token` after (a, b) in every row where ok: [B] each."""
        rows = jnp.arange(a.shape[0])
        key = self.bucket(a, b)
        slots, counts = state.tokens[rows, key], state.counts[rows, key]  # [B, k]
        present = (slots == token[:, None]) & (counts > 0)
        slot = jnp.where(jnp.any(present, axis=1), jnp.argmax(present, axis=1), jnp.argmin(counts, axis=1))
        count = jnp.where(jnp.any(present, axis=1), counts[rows, slot], 0.0) + 1.0
        key = jnp.where(ok, key, self.buckets)  # rows without a token write out of range: dropped
        return state.replace(
            tokens=state.tokens.at[rows, key, slot].set(token, mode="drop"),
            counts=state.counts.at[rows, key, slot].set(count, mode="drop"),
        )

    def _add_span(self, state: TrieState, history, first, last) -> TrieState:
        """Counts every token at history positions [first, last) after the two before it, in order."""
        h = history.shape[1]
        rows = jnp.arange(history.shape[0])

        def add(i, state):
            at = first + i
            ok = (at < last) & (at >= 2)
            pick = lambda p: history[rows, jnp.clip(p, 0, h - 1)]
            return self._add(state, pick(at - 2), pick(at - 1), pick(at), ok)

        return jax.lax.fori_loop(0, jnp.max(jnp.maximum(last - first, 0)), add, state)

    def init(self, params, prompts, prompt_len, new_slots, start):
        """Counts the user's prompts (an encoder-decoder's input: copied text often comes from there)."""
        b = prompts.shape[0]
        shape = (b, self.buckets, self.width)
        state = TrieState(jnp.zeros(shape, jnp.int32), jnp.zeros(shape, jnp.float32), start.lengths)
        return self._add_span(state, prompts, jnp.zeros((b,), jnp.int32), prompt_len)

    def propose(self, params, state: TrieState, ctx: Context):
        b, t = ctx.seq_len.shape[0], self.tree.size
        rows = jnp.arange(b)[:, None]
        h = ctx.history.shape[1]
        last = lambda back: ctx.history[rows[:, 0], jnp.clip(ctx.seq_len - back, 0, h - 1)]
        root, before_root = last(1), last(2)
        tokens = jnp.zeros((b, t), jnp.int32)
        valid = jnp.zeros((b, t), bool)
        for d in range(1, max(self.tree.depth) + 1):  # one gather per depth: parents come first
            nodes = [i for i in range(t) if self.tree.depth[i] == d]
            parents = [self.tree.parents[i] for i in nodes]
            grand = [self.tree.parents[p] if p >= 0 else -2 for p in parents]
            ranks = jnp.asarray([self.tree.rank[i] for i in nodes])
            token_of = lambda idx: jnp.stack(
                [root if i == -1 else before_root if i == -2 else tokens[:, i] for i in idx], axis=1
            )
            key = self.bucket(token_of(grand), token_of(parents))  # [B, n]
            counts, order = jax.lax.top_k(state.counts[rows, key], self.width)  # most counted first
            picked = jnp.take_along_axis(order, ranks[None, :, None], axis=2)[..., 0]
            parent_ok = jnp.stack([jnp.ones((b,), bool) if p < 0 else valid[:, p] for p in parents], axis=1)
            tokens = tokens.at[:, nodes].set(state.tokens[rows, key, picked])
            valid = valid.at[:, nodes].set(parent_ok & (jnp.take_along_axis(counts, ranks[None, :, None], axis=2)[..., 0] > 0))
        valid &= (ctx.seq_len >= 2)[:, None] & ~ctx.done[:, None]
        return static_tree_draft(self.tree.parents, tokens, valid), state

    def update(self, params, state: TrieState, ctx: Context, verified: Verified):
        """Older counts decay; the step's emitted tokens count."""
        state = self._add_span(state.replace(counts=state.counts * self.decay), ctx.history, state.seen, ctx.seq_len)
        return state.replace(seen=ctx.seq_len)
