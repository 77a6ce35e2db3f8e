"""How many drafts a step should have verified: the measured verify cost against the rows' acceptance so far.

A step that verifies k drafts costs c(k + 1) target-forward units (the
measured cost curve of the batch size, jaxspec/cost_model.py, at the
compiled width the loop will run) plus k · d for drafting them (a draft
model's step relative to the target's; 0 for drafts that cost nothing, like
prompt lookup). Row b then emits in expectation

    g_b(k) = 1 + S_b(1) + ... + S_b(k),   S_b(j) = h_b(1) · ... · h_b(j)

tokens, where h_b(i) is the chance that its i-th draft is accepted given the
ones before it were. The step takes the common cap k that maximises
Σ_b g_b(min(k, proposed_b)) / (c(k + 1) + k · d) over the active rows;
k = 0 is a plain step (one token per row at cost 1), so a batch drafts only
where drafting is expected to pay.

One cap for the batch, not one per row: the verify forward is as wide as the
widest row, so a row that would not draft on its own still rides along for
free once another row pays for the width, and a row's long draft costs every
row. (Measured on Gemma 3 270M at batch 4, per-row choices ignoring this ran
at 0.75x plain decoding.)

h_b(i) is estimated per row and per depth, from decayed counts of how often
depth i was reached in a verify (`trials`) and accepted (`accepts`):
h(i) = (accepts + n0 · m(i)) / (trials + n0), with n0 = a0 + r0 prior
pseudo-counts whose mean m(i) is, for a chain, a0 / n0 (0.75) or the
estimate of the depth before, h(i - 1), whichever is higher. Per depth
rather than one geometric rate because copied drafts are accepted in runs:
once a copy holds for a few tokens it tends to hold on, and a geometric fit
over-values drafts past where copies usually end. A depth never tried starts
where the one before it stands: with 0.75 at every depth, depths past those
tried looked worse than the copy in progress, so a copy accepted 8 drafts at
a time was never offered 16. But never below 0.75: a draft deeper than a
rejected one is judged on its own, given that the ones before it held (a
prior chained down from depth 1 cut the drafts of rows whose matches often
failed at once). Gemma 3 270M, prompt lookup with up to 16 drafts, batch 1,
one process per rule: code editing 4.4 -> 12.0 tokens per call, 2.76x ->
3.27x plain decoding; multi-turn 3.7 -> 5.0, 1.92x -> 2.16x. Counts decay
every step, so a depth not tried for a while drifts back to its prior and
is tried again: text that turns repetitive is found.

Trees are sized the same way, node by node. A tree's nodes come in priority
order (jaxspec/static_tree.py: parents before children, most likely first),
so its first k nodes are a tree, the best k-node one under the accuracies it
was grown from, and a step that verifies k drafts verifies that prefix. h_b(i)
is then node i's chance of acceptance given its parent's (counted over the
steps whose verify held node i and accepted its parent), node i is on the
accepted path with probability S_b(i), the product of h over its ancestors
and itself, and g_b(k) sums S_b over the first k nodes: a chain is the tree
whose ancestors are the drafts before. Each node's prior mean is the
acceptance its tree was grown from (`node_prior`): a rank-3 sibling starts
where a rank-0 child does not.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import struct

from jaxspec.tree import TreeShape


@struct.dataclass
class SizingState:
    trials: jnp.ndarray  # [B, K] float32 decayed count of verifies that reached draft i (0-based)
    accepts: jnp.ndarray  # [B, K] float32 decayed count of those that accepted it


@dataclasses.dataclass(frozen=True)
class DraftSizing:
    """Static (hashable) under jit: the cost table is part of the compiled program."""

    verify_cost: tuple[float, ...]  # [k] for k = 0..K: cost of a step verifying k drafts, in 1-token forwards
    draft_cost: float = 0.0  # one drafted token, in 1-token target forwards
    decay: float = 0.97
    prior: tuple[float, float] = (3.0, 1.0)  # pseudo-counts (accepted, rejected): h starts at 0.75
    # A tree's nodes: each one's prior chance of acceptance given its parent's, at the strength of `prior`'s
    # counts (K entries). None: `prior`'s mean for every draft.
    node_prior: tuple[float, ...] | None = None

    def __post_init__(self):
        if not self.verify_cost or any(c <= 0 for c in self.verify_cost):
            raise ValueError(f"verify_cost must be positive costs for k = 0..K, got {self.verify_cost}")
        if not 0.0 <= self.decay < 1.0 or min(self.prior) <= 0.0:
            raise ValueError(f"need 0 <= decay < 1 and positive prior counts, got {self.decay}, {self.prior}")
        if self.node_prior is not None and (
            len(self.node_prior) != self.max_drafts or not all(0.0 < h <= 1.0 for h in self.node_prior)
        ):
            raise ValueError(f"node_prior needs {self.max_drafts} chances in (0, 1], got {self.node_prior}")

    @property
    def max_drafts(self) -> int:
        return len(self.verify_cost) - 1

    def init(self, batch: int) -> SizingState:
        zeros = jnp.zeros((batch, self.max_drafts), jnp.float32)
        return SizingState(zeros, zeros)

    def acceptance(self, state: SizingState) -> jnp.ndarray:
        """[B, K] h: each row's chance of accepting draft i given that its parent (a chain: the draft
        before it) was accepted. A tree node's prior mean is its node_prior; a chain draft's is the
        prior's mean or the estimate of the draft before it, whichever is higher."""
        a0, r0 = self.prior
        n0 = a0 + r0
        if self.node_prior is not None:
            return (state.accepts + n0 * jnp.asarray(self.node_prior, jnp.float32)) / (state.trials + n0)
        h, mean = [], jnp.full(state.trials.shape[:1], a0 / n0, jnp.float32)
        for i in range(self.max_drafts):
            h.append((state.accepts[:, i] + n0 * mean) / (state.trials[:, i] + n0))
            mean = jnp.maximum(h[-1], a0 / n0)
        return jnp.stack(h, axis=1)

    def expected_tokens(self, state: SizingState, shape: TreeShape | None = None) -> jnp.ndarray:
        """[B, K + 1] g(k): tokens a row emits in expectation when it verifies its first k drafts (of the
        tree `shape`, or a chain)."""
        h = self.acceptance(state)
        if shape is None:
            survival = jnp.cumprod(h, axis=1)
        else:  # the product of h over each node's ancestors and itself
            survival = jnp.exp(jnp.einsum("bij,bj->bi", shape.ancestors[:, 1:, 1:].astype(jnp.float32), jnp.log(h)))
        b = survival.shape[0]
        return jnp.concatenate([jnp.ones((b, 1)), 1.0 + jnp.cumsum(survival, axis=1)], axis=1)

    def limit(self, state: SizingState, available: jnp.ndarray, active: jnp.ndarray,
              shape: TreeShape | None = None) -> jnp.ndarray:
        """[B] int32: drafts each row verifies, min(available, the batch's best cap); 0 for inactive rows."""
        k = jnp.arange(self.max_drafts + 1)
        used = jnp.minimum(k[None, :], available[:, None])  # [B, K + 1] drafts row b verifies under cap k
        tokens = jnp.take_along_axis(self.expected_tokens(state, shape), used, axis=1)
        tokens = jnp.sum(jnp.where(active[:, None], tokens, 0.0), axis=0)
        cost = jnp.asarray(self.verify_cost, jnp.float32) + k * self.draft_cost
        # Caps beyond every row's proposal buy nothing; argmax takes the first best, so the shortest.
        cap = jnp.argmax(tokens / cost)
        return jnp.where(active, jnp.minimum(available, cap), 0).astype(jnp.int32)

    def observe(self, state: SizingState, verified: jnp.ndarray, accepted: jnp.ndarray,
                path: jnp.ndarray | None = None, shape: TreeShape | None = None) -> SizingState:
        """After a step: `verified` drafts of each row were checked (0: none) and `accepted` kept, the
        first ones of a chain, or the nodes at window indices path[:, 1 .. accepted] of the tree `shape`.

        Draft i was reached if i < verified and its parent was accepted (the root always is)."""
        i = jnp.arange(self.max_drafts)[None, :]
        if shape is None:
            reached = (i < verified[:, None]) & (i <= accepted[:, None])
            kept = i < accepted[:, None]
        else:
            depth = jnp.arange(path.shape[1])[None, :, None]
            on_path = (path[:, :, None] == i[:, None, :] + 1) & (depth >= 1) & (depth <= accepted[:, None, None])
            kept = jnp.any(on_path, axis=1)  # [B, K]
            kept_or_root = jnp.concatenate([jnp.ones_like(kept[:, :1]), kept], axis=1)
            reached = (i < verified[:, None]) & jnp.take_along_axis(kept_or_root, shape.parent_window, axis=1)
        return SizingState(
            trials=self.decay * state.trials + reached.astype(jnp.float32),
            accepts=self.decay * state.accepts + kept.astype(jnp.float32),
        )
