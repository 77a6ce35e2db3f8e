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
h = (accepts + a0) / (trials + a0 + r0) with prior pseudo-counts (a0, r0).
Per depth rather than one geometric rate because copied drafts are accepted
in runs: once a copy holds for a few tokens it tends to hold on, and a
geometric fit over-values drafts past where copies usually end. Counts decay
every step, so a depth not tried for a while drifts back to the prior and is
tried again: text that turns repetitive is found.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import struct


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

    def __post_init__(self):
        if not self.verify_cost or any(c <= 0 for c in self.verify_cost):
            raise ValueError(f"verify_cost must be positive costs for k = 0..K, got {self.verify_cost}")
        if not 0.0 <= self.decay < 1.0 or min(self.prior) <= 0.0:
            raise ValueError(f"need 0 <= decay < 1 and positive prior counts, got {self.decay}, {self.prior}")

    @property
    def max_drafts(self) -> int:
        return len(self.verify_cost) - 1

    def init(self, batch: int) -> SizingState:
        zeros = jnp.zeros((batch, self.max_drafts), jnp.float32)
        return SizingState(zeros, zeros)

    def acceptance(self, state: SizingState) -> jnp.ndarray:
        """[B, K] h: each row's chance of accepting draft i given drafts before it were accepted."""
        a0, r0 = self.prior
        return (state.accepts + a0) / (state.trials + a0 + r0)

    def expected_tokens(self, state: SizingState) -> jnp.ndarray:
        """[B, K + 1] g(k): tokens a row emits in expectation when it verifies k drafts."""
        survival = jnp.cumprod(self.acceptance(state), axis=1)
        b = survival.shape[0]
        return jnp.concatenate([jnp.ones((b, 1)), 1.0 + jnp.cumsum(survival, axis=1)], axis=1)

    def limit(self, state: SizingState, available: jnp.ndarray, active: jnp.ndarray) -> jnp.ndarray:
        """[B] int32: drafts each row verifies, min(available, the batch's best cap); 0 for inactive rows."""
        k = jnp.arange(self.max_drafts + 1)
        used = jnp.minimum(k[None, :], available[:, None])  # [B, K + 1] drafts row b verifies under cap k
        tokens = jnp.take_along_axis(self.expected_tokens(state), used, axis=1)
        tokens = jnp.sum(jnp.where(active[:, None], tokens, 0.0), axis=0)
        cost = jnp.asarray(self.verify_cost, jnp.float32) + k * self.draft_cost
        # Caps beyond every row's proposal buy nothing; argmax takes the first best, so the shortest.
        cap = jnp.argmax(tokens / cost)
        return jnp.where(active, jnp.minimum(available, cap), 0).astype(jnp.int32)

    def observe(self, state: SizingState, verified: jnp.ndarray, accepted: jnp.ndarray) -> SizingState:
        """After a step: `verified` drafts of each row were checked (0: none) and the first `accepted` kept.

        Draft i was reached if i < verified and every draft before it was accepted (i <= accepted)."""
        i = jnp.arange(self.max_drafts)[None, :]
        reached = (i < verified[:, None]) & (i <= accepted[:, None])
        kept = i < accepted[:, None]
        return SizingState(
            trials=self.decay * state.trials + reached.astype(jnp.float32),
            accepts=self.decay * state.accepts + kept.astype(jnp.float32),
        )
