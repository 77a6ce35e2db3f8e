"""Draft trees: their structure, the acceptance rules over them, and the accepted path.

A tree draft of T nodes per row is tokens [B, T], parents [B, T] and valid [B, T].
parents[b, i] is the index of node i's parent, or -1 when node i follows the
last emitted token. The verify window is [last emitted token, node 0 .. node
T-1], so node i sits at window index i + 1 and the window's first token is the
root (window index 0, depth 0). Parents come before their children (static
trees keep the order they were grown in, most likely node first; EAGLE's and
prompt lookup's are built level by level). A chain is the tree with parents
i - 1.

The target scores window index w at position lengths + depth[w], seeing the
committed prefix and its own ancestors (`ancestors`), so every node is scored
exactly as if its path had been decoded plainly.

Acceptance (DESIGN §5, §8). The target's token after window node w is y[w]:
its argmax under greedy, a draw from p[w] under sampling, keyed by the history
position it decides (row_rng), the very draw plain sampling makes there. A
point-mass node is accepted when its parent is and its token equals y at its
parent; the deepest accepted node ends the path and y there is the next token.
That is the sibling-by-sibling rule for point-mass drafts (try a child with
probability p(x), on rejection zero x and renormalise) in one draw per node.
Drafts with distributions q go through `tree_ratio_walk`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxspec import row_rng
from jaxspec.row_rng import RowRandom


class TreeShape(NamedTuple):
    """What the verify forward and the rules need of a tree, computed once per step."""

    parent_window: jax.Array  # [B, T] window index of each node's parent (0: the root)
    depth: jax.Array  # [B, 1 + T] depth of each window index; the root is 0
    ancestors: jax.Array  # [B, 1 + T, 1 + T] bool: window index j is w's ancestor or w itself


def chain_parents(batch: int, size: int) -> jax.Array:
    """The parents of a chain of `size` drafts: node i follows node i - 1."""
    return jnp.broadcast_to(jnp.arange(size, dtype=jnp.int32) - 1, (batch, size))


def tree_shape(parents: jax.Array) -> TreeShape:
    """Depths and the ancestor-or-self mask, one node at a time in index order (parents come first)."""
    b, t = parents.shape
    rows = jnp.arange(b)
    parent_window = (parents + 1).astype(jnp.int32)
    depth = jnp.zeros((b, 1 + t), jnp.int32)
    ancestors = jnp.broadcast_to(jnp.eye(1 + t, dtype=bool), (b, 1 + t, 1 + t))

    def node(i, carry):
        depth, ancestors = carry
        w = i + 1
        p = parent_window[:, i]
        depth = depth.at[:, w].set(depth[rows, p] + 1)
        ancestors = ancestors.at[:, w].set(ancestors[rows, p] | (jnp.arange(1 + t) == w)[None, :])
        return depth, ancestors

    depth, ancestors = jax.lax.fori_loop(0, t, node, (depth, ancestors))
    return TreeShape(parent_window, depth, ancestors)


def path_to(shape: TreeShape, end: jax.Array) -> jax.Array:
    """[B, 1 + T] window indices of the path root .. end[b], by depth; entries past end's depth are 0."""
    b, w1 = shape.depth.shape
    on_path = jnp.take_along_axis(shape.ancestors, end[:, None, None], axis=1)[:, 0]  # [B, 1 + T]
    slot = jnp.where(on_path, shape.depth, w1)
    return jnp.zeros((b, w1), jnp.int32).at[jnp.arange(b)[:, None], slot].set(
        jnp.broadcast_to(jnp.arange(w1, dtype=jnp.int32), (b, w1)), mode="drop"
    )


def deepest(shape: TreeShape, accepted: jax.Array) -> jax.Array:
    """[B] the window index of the deepest accepted node (the first in index order among equals), or 0."""
    t = accepted.shape[1]
    score = jnp.where(accepted, shape.depth[:, 1:] * (t + 1) + (t - jnp.arange(t))[None, :], -1)
    return jnp.where(jnp.any(accepted, axis=1), jnp.argmax(score, axis=1) + 1, 0).astype(jnp.int32)


class TreeVerdict(NamedTuple):
    n_accepted: jax.Array  # [B] accepted drafts: the depth of the path's end
    next_token: jax.Array  # [B] the token after the path
    path: jax.Array  # [B, 1 + T] window indices by depth; path[:, 0] == 0, entries past n_accepted are 0


def ending_at(shape: TreeShape, end: jax.Array, next_token: jax.Array) -> TreeVerdict:
    """The verdict of a path that ends at window index end[b] and is followed by next_token[b]."""
    return TreeVerdict(jnp.take_along_axis(shape.depth, end[:, None], axis=1)[:, 0], next_token, path_to(shape, end))


def accept_tree_point_mass(rand: RowRandom, p, tokens, valid, shape: TreeShape, greedy: bool = False,
                           draws=None) -> TreeVerdict:
    """Point-mass drafts over a tree; p: [B, 1 + T, V] the target's distribution after each window index, or
    `draws` [B, 1 + T]: the target's draws there when already made (under greedy, the verify's argmax)."""
    y = draws if draws is not None else row_rng.categorical(rand.keys_for(row_rng.TARGET, shape.depth), p, greedy)
    match = valid & (tokens == jnp.take_along_axis(y, shape.parent_window, axis=1))
    # A node is accepted when it and all its ancestors (the root aside) match.
    accepted = valid & ~jnp.any(shape.ancestors[:, 1:, 1:] & ~match[:, None, :], axis=2)
    end = deepest(shape, accepted)
    return ending_at(shape, end, jnp.take_along_axis(y, end[:, None], axis=1)[:, 0])


def subtract_draft(residual, q_node):
    """After rejecting a node drawn from q_node: residual <- norm(max(0, residual - q_node)).

    A rejection has probability sum(max(0, residual - q_node)), so it leaves positive mass;
    the fallback only guards float round-off."""
    left = jnp.maximum(residual - q_node, 0.0)
    total = jnp.sum(left, axis=-1, keepdims=True)
    return jnp.where(total > 0, left / jnp.maximum(total, 1e-30), residual)


def tree_ratio_walk(rand: RowRandom, p, q, tokens, valid, shape: TreeShape, *, on_reject=subtract_draft,
                    final_from_residual: bool = True) -> TreeVerdict:
    """Drafts with distributions over a tree: siblings tried in order, each by the ratio test.

    q[b, i] is the distribution node i was drawn from, given its parent and the siblings drawn before
    it (for children drawn without replacement, q with the earlier siblings zeroed). Walking the nodes
    in index order, the walk sits at a node with residual r (p there on arrival); each valid child x
    is accepted with probability min(1, r(x) / q(x)), and moves the walk there; a rejection updates r
    by `on_reject`. When no child is accepted the next token is drawn from r. With the default
    `on_reject` this emits exactly p's distribution (multi-draft speculative sampling, SpecInfer; DESIGN
    §5). `on_reject` and `final_from_residual` exist so tests can show that the wrong variants fail.
    """
    b, t = tokens.shape
    rows = jnp.arange(b)
    u = row_rng.uniform(rand.node_keys(row_rng.ACCEPT, shape.depth[:, 1:]))  # [B, T]
    qx = jnp.take_along_axis(q, tokens[..., None], axis=2)[..., 0]

    def node(i, carry):
        at, residual = carry
        tried = valid[:, i] & (shape.parent_window[:, i] == at)
        rx = residual[rows, tokens[:, i]]
        take = tried & (u[:, i] * qx[:, i] < rx)
        rejected = tried & ~take
        at = jnp.where(take, i + 1, at)
        after = on_reject(residual, q[:, i])
        residual = jnp.where(take[:, None], p[:, i + 1], jnp.where(rejected[:, None], after, residual))
        return at, residual

    at, residual = jax.lax.fori_loop(0, t, node, (jnp.zeros((b,), jnp.int32), p[:, 0]))
    final = residual if final_from_residual else p[rows, at]
    depth = jnp.take_along_axis(shape.depth, at[:, None], axis=1)[:, 0]
    return ending_at(shape, at, row_rng.categorical(rand.keys_at(row_rng.TARGET, depth), final))
