"""EAGLE-2's dynamic draft tree (Li et al. 2024) over an EAGLE-style feature drafter (models/eagle.py), in
static shapes.

The drafter's cache holds one pair per committed position, under the target
cache's invariant (every position but the last emitted one); `feature` is its
output at the last committed pair, g, whose logits score the token after the
last emitted one.

Each step grows a tree by cumulative draft log-probability, depth by depth:
depth 1 is the top `width` tokens of g's logits; at each further depth the
`width` frontier nodes run through the layer in one call (each attending to
the committed pairs, its ancestors' pairs and its own, written in scratch
slots past the committed ones), each proposes its top `width` children, and
the `width` best children by cumulative score form the next frontier. Every
node generated joins a pool of width + (depth - 1) · width² candidates, and
the `size` best of the pool by cumulative score are the tree, kept in pool
order (so by depth, parents first). A child's score is its parent's plus a
log-probability <= 0, and top-k breaks ties towards the lower (earlier)
index, so a chosen node's parent is chosen too; a node whose parent was not
(a tie the other way) is marked invalid and never accepted.

Drafts are point masses chosen without randomness from the draft's logits,
so the point-mass tree rule keeps decoding lossless under sampling
(EAGLE's reference samples its tree under temperature and is lossy there).
After each verify the accepted path's pairs (the target's true features at
the last emitted token and the accepted drafts, each with the token after
it) go through the layer at their positions, and g is its output at the
path's end.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec import vocab_reduce
from jaxspec.drafters.base import Context, Draft, Verified

WIDTH = 8  # EAGLE-2's top-k per expansion is 10 at 60 nodes; 8 keeps CPU-sized trees' pools small


@struct.dataclass
class EagleState:
    feature: jax.Array  # [B, D] g at the last committed pair
    ready: jax.Array  # [B] bool: feature holds a verified state
    cache: Any  # the drafter's KVCache (lengths: the target's committed), scratch slots past its max_len


def tree_width(size: int, depth: int) -> int:
    """The narrowest expansion width from min(size, WIDTH) up whose pool holds `size` nodes."""
    width = min(size, WIDTH)
    while width + (depth - 1) * width * width < size:
        width += 1
    return width


@dataclasses.dataclass(frozen=True)
class Eagle:
    heads: Any  # models.eagle.EagleHeads
    size: int  # nodes per tree
    depth: int  # the deepest a tree grows (<= the steps the drafter was trained for)

    @property
    def num_draft_tokens(self) -> int:
        return self.size

    @property
    def width(self) -> int:
        return tree_width(self.size, self.depth)

    @property
    def scratch(self) -> int:
        """Slots past the committed ones a step's frontier pairs take."""
        return self.width * (self.depth - 1)

    def init(self, params, prompts, prompt_len, new_slots, start):
        """The prompt's pairs (f_i, x_{i+1}) from the target's prefill, g at the last one (before the last
        prompt token)."""
        b = prompts.shape[0]
        cache = self.heads.init_cache(b, start.cache.max_len + self.scratch)
        if start.constrain is not None:  # on a mesh, laid out as the target's cache is
            cache = start.constrain(cache)
        if start.hidden is None:  # an encoder-decoder's decoder: nothing prefilled, a plain first step
            return EagleState(jnp.zeros((b, self.heads.config.hidden_size), jnp.float32), jnp.zeros((b,), bool), cache)
        p = start.hidden.shape[1]
        head_params, _, table, _ = params
        following = jnp.pad(prompts[:, 1:], ((0, 0), (0, p)))[:, :p]  # x_{i+1} beside f_i
        g, cache = self.heads.extend(head_params, start.hidden, self.heads.token_inputs(table, following), cache)
        feature = jnp.take_along_axis(g, jnp.maximum(start.lengths - 2, 0)[:, None, None], axis=1)[:, 0]
        return EagleState(feature.astype(jnp.float32), start.lengths >= 2, cache.with_lengths(start.cache.lengths))

    def _scores(self, rows, ids, g):
        """The top `width` draft tokens (target ids) after features g [..., D] and their log-probabilities."""
        logp = jax.nn.log_softmax(self.heads.logits(g, rows), axis=-1)
        scores, top = vocab_reduce.top_k(logp, self.width)
        return scores, (top if ids is None else ids[top]).astype(jnp.int32)

    def propose(self, params, state: EagleState, ctx: Context):
        """params: (the drafter's params, the output embedding rows scored [N, D], the whole output embedding
        [V, D] (token inputs), the rows' ids [N] or None)."""
        head_params, rows, table, ids = params
        b, k = state.feature.shape[0], self.width
        cache = state.cache
        lengths = cache.lengths
        keys, values = cache.keys[0], cache.values[0]
        scores, tokens = self._scores(rows, ids, state.feature)  # depth 1
        pool_scores, pool_tokens, pool_parents = [scores], [tokens], [jnp.full((b, k), -1, jnp.int32)]
        # The frontier: its nodes' tokens, cumulative scores, the features that predicted them, pool indices,
        # and which scratch slots hold their ancestors' pairs.
        feature = jnp.broadcast_to(state.feature[:, None, :], (b, k, state.feature.shape[-1]))
        index = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k))
        ancestors = jnp.zeros((b, k, self.scratch), bool)
        slot = jnp.arange(cache.max_len)[None, :] - lengths[:, None]  # [B, S] scratch index of each slot
        in_scratch = (slot >= 0) & (slot < self.scratch)
        for d in range(2, self.depth + 1):
            own = (d - 2) * k + jnp.arange(k)
            seen = ancestors | (jnp.arange(self.scratch)[None, None, :] == own[None, :, None])
            allowed = (slot < 0)[:, None, :] | (in_scratch[:, None, :] & jnp.take_along_axis(
                seen, jnp.broadcast_to(jnp.clip(slot, 0, self.scratch - 1)[:, None, :], (b, k, slot.shape[1])), axis=2))
            positions = jnp.broadcast_to(lengths[:, None] + d - 2, (b, k))
            g, keys, values = self.heads.step(head_params, feature, self.heads.token_inputs(table, tokens), positions,
                                              keys, values, lengths[:, None] + own[None, :], allowed)
            child_scores, child_tokens = self._scores(rows, ids, g)  # [B, k, k]
            child_scores = (scores[:, :, None] + child_scores).reshape(b, k * k)
            child_tokens = child_tokens.reshape(b, k * k)
            pool_scores.append(child_scores)
            pool_tokens.append(child_tokens)
            pool_parents.append(jnp.repeat(index, k, axis=1))
            scores, best = jax.lax.top_k(child_scores, k)
            parent = best // k
            tokens = jnp.take_along_axis(child_tokens, best, axis=1)
            feature = jnp.take_along_axis(g, parent[:, :, None], axis=1)
            ancestors = jnp.take_along_axis(seen, parent[:, :, None], axis=1)
            index = (k + (d - 2) * k * k + best).astype(jnp.int32)
        draft = self._choose(jnp.concatenate(pool_scores, 1), jnp.concatenate(pool_tokens, 1),
                             jnp.concatenate(pool_parents, 1), state.ready & ~ctx.done)
        return draft, state

    def _choose(self, scores, tokens, parents, ready) -> Draft:
        """The `size` best pool nodes in pool order, their parents re-indexed among them."""
        _, chosen = jax.lax.top_k(scores, self.size)
        chosen = jnp.sort(chosen, axis=1)
        parent_pool = jnp.take_along_axis(parents, chosen, axis=1)
        match = chosen[:, None, :] == parent_pool[:, :, None]  # [B, T, T]: chosen node j is node i's parent
        root = parent_pool < 0
        valid = (root | jnp.any(match, axis=2)) & ready[:, None]
        return Draft(
            tokens=jnp.take_along_axis(tokens, chosen, axis=1),
            n_valid=jnp.where(jnp.any(valid, axis=1), self.size, 0).astype(jnp.int32),
            probs=None,
            parents=jnp.where(root, -1, jnp.argmax(match, axis=2)).astype(jnp.int32),
            valid=valid,
        )

    def update(self, params, state: EagleState, ctx: Context, verified: Verified):
        """The accepted path's pairs: the target's features at the path's window indices (the last emitted
        token's first), each with the token after it in the history, at the positions from the committed
        length on; g at the path's end."""
        head_params, _, table, _ = params
        n = min(self.depth, self.size) + 1
        hidden = jnp.take_along_axis(verified.hidden, verified.path[:, :n, None], axis=1)
        cache = state.cache
        following = jnp.take_along_axis(
            ctx.history, jnp.clip(cache.lengths[:, None] + 1 + jnp.arange(n)[None, :], 0, ctx.history.shape[1] - 1),
            axis=1)
        g, cache = self.heads.extend(head_params, hidden, self.heads.token_inputs(table, following), cache)
        feature = jnp.take_along_axis(g, jnp.minimum(verified.n_accepted, n - 1)[:, None, None], axis=1)[:, 0]
        return EagleState(feature.astype(jnp.float32), jnp.ones_like(state.ready), cache.with_lengths(ctx.seq_len - 1))
