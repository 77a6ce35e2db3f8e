"""Hydra (Ankner et al. 2024): sequentially dependent draft heads, verified as a static tree.

The tree is Medusa's (jaxspec/static_tree.py, grown from the heads' measured
accuracies), but drafted depth by depth: the depth-d nodes are the top
guesses of head d - 1 run on each depth-(d-1) node that has children, with
that node's path (the last emitted token, then the drafts down to it) as the
head's token input (models/hydra.py). Parents come before children, so one
batched head call per depth fills the tree: D small calls a step for a tree D
deep. Drafts are point masses (lossless under sampling by the point-mass tree
rule).

The feature f is the target's final hidden state before the last emitted
token, as for Medusa, or with Hydra++'s prefix layer that layer's output
there. The prefix layer keeps its own cache under the target cache's
invariant (K/V of every committed position, that is every position but the
last emitted one): after each verify the hidden states of the accepted path
(the last emitted token, then the accepted drafts) go through it at their
positions, and f is its output at the path's end.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec import vocab_reduce
from jaxspec.drafters.base import Context, Verified, static_tree_draft
from jaxspec.static_tree import StaticTree


@struct.dataclass
class HydraState:
    feature: jax.Array  # [B, D] f before the last emitted token
    ready: jax.Array  # [B] bool: feature holds a verified state
    prefix_cache: Any  # the prefix layer's KVCache (lengths: the target's committed), or None


@dataclasses.dataclass(frozen=True)
class Expansion:
    """How one depth of a static tree is drafted: the nodes expanded, their paths, and where each child
    reads its guess."""

    parents: tuple[int, ...]  # expanded nodes (-1: the root), each run through the depth's head once
    paths: tuple[tuple[int, ...], ...]  # per expanded node, its path's nodes from depth 1 down to itself
    nodes: tuple[int, ...]  # the depth's nodes
    slot: tuple[int, ...]  # per node, its parent's index in `parents`
    ranks: int  # guesses read per expanded node


def expansions(tree: StaticTree) -> tuple[Expansion, ...]:
    """The depths of `tree` in order, as Hydra drafts them."""
    def path(node: int) -> tuple[int, ...]:
        return () if node < 0 else path(tree.parents[node]) + (node,)

    out = []
    for d in range(1, max(tree.depth) + 1):
        nodes = tuple(i for i in range(tree.size) if tree.depth[i] == d)
        parents = tuple(dict.fromkeys(tree.parents[i] for i in nodes))
        out.append(Expansion(
            parents=parents,
            paths=tuple(path(p) for p in parents),
            nodes=nodes,
            slot=tuple(parents.index(tree.parents[i]) for i in nodes),
            ranks=max(tree.rank[i] for i in nodes) + 1,
        ))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Hydra:
    heads: object  # models.hydra.HydraHeads
    tree: StaticTree

    @property
    def num_draft_tokens(self) -> int:
        return self.tree.size

    def init(self, params, prompts, prompt_len, new_slots, start):
        """f before each row's last prompt token, from the target's prefill (through the prefix layer over
        the whole prompt, when there is one)."""
        b = prompts.shape[0]
        cache = self.heads.init_prefix_cache(b, start.cache.max_len)
        if cache is not None and start.constrain is not None:  # on a mesh, laid out as the target's cache is
            cache = start.constrain(cache)
        if start.hidden is None:  # an encoder-decoder's decoder: nothing prefilled, a plain first step
            return HydraState(jnp.zeros((b, self.heads.config.hidden_size), jnp.float32), jnp.zeros((b,), bool), cache)
        p = start.hidden.shape[1]
        positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
        f, cache = self.heads.features(params[0], start.hidden, positions, cache)
        before_last = jnp.maximum(start.lengths - 2, 0)
        feature = jnp.take_along_axis(f, before_last[:, None, None], axis=1)[:, 0]
        if cache is not None:
            cache = cache.with_lengths(start.cache.lengths)
        return HydraState(feature, start.lengths >= 2, cache)

    def propose(self, params, state: HydraState, ctx: Context):
        """params: (heads params, the output embedding rows scored [N, D], the whole output embedding
        [V, D] (the heads' token inputs), the rows' ids [N] or None)."""
        head_params, rows, table, ids = params
        b, t = state.feature.shape[0], self.tree.size
        last = jnp.take_along_axis(ctx.history, (ctx.seq_len - 1)[:, None], axis=1)[:, 0]
        root = jnp.concatenate([state.feature, self.heads.token_inputs(table, last)], axis=-1)  # [B, 2D]
        tokens = jnp.zeros((b, t), jnp.int32)
        for k, depth in enumerate(expansions(self.tree)):
            n = len(depth.parents)
            x = jnp.broadcast_to(root[:, None, :], (b, n, root.shape[-1]))
            if k:  # the drafts on each expanded node's path, in depth order
                path_tokens = tokens[:, jnp.asarray(depth.paths)]  # [B, n, k]
                x = jnp.concatenate([x, self.heads.token_inputs(table, path_tokens).reshape(b, n, -1)], axis=-1)
            logits = self.heads.logits(self.heads.head_features(head_params, k, x), rows)  # [B, n, N]
            _, top = vocab_reduce.top_k(logits, depth.ranks)  # [B, n, R]
            guesses = top[:, jnp.asarray(depth.slot), jnp.asarray([self.tree.rank[i] for i in depth.nodes])]
            if ids is not None:
                guesses = ids[guesses]
            tokens = tokens.at[:, jnp.asarray(depth.nodes)].set(guesses.astype(jnp.int32))
        ready = state.ready & ~ctx.done
        return static_tree_draft(self.tree.parents, tokens, jnp.broadcast_to(ready[:, None], (b, t))), state

    def update(self, params, state: HydraState, ctx: Context, verified: Verified):
        """f at the end of the accepted path; the prefix layer first takes the whole path's hidden states
        (the last emitted token's at index 0), written from its committed length on."""
        hidden = jnp.take_along_axis(verified.hidden, verified.path[:, :, None], axis=1)  # [B, K + 1, D] by depth
        cache = state.prefix_cache
        positions = None
        if cache is not None:
            positions = cache.lengths[:, None] + jnp.arange(hidden.shape[1])[None, :]
        f, cache = self.heads.features(params[0], hidden, positions, cache)
        feature = jnp.take_along_axis(f, verified.n_accepted[:, None, None], axis=1)[:, 0]
        if cache is not None:
            cache = cache.with_lengths(ctx.seq_len - 1)
        return HydraState(feature, jnp.ones_like(state.ready), cache)
