"""How many drafts a row should have verified this step: the measured verify cost against the row's acceptance.

A step that verifies k drafts costs c(k + 1) target-forward units (the
measured cost curve, jaxspec/cost_model.py, at the compiled width the loop
will run) plus k · d for drafting them (a draft model's step, relative to the
target's; 0 for drafts that cost nothing, like prompt lookup). If each draft
is accepted with probability α independently, the step emits in expectation

    g(k) = 1 + α + ... + α^k = (1 − α^(k+1)) / (1 − α)

tokens. Each row takes the k in [0, available] that maximises g(k) / (c(k+1)
+ k · d); k = 0 is a plain step (g = 1, cost 1), so a row drafts only where
drafting is expected to pay.

α is estimated per row from its own history, as the maximum-likelihood rate
of a geometric run with decayed counts: A (accepted drafts) and R (steps that
ended in a rejection) both shrink by `decay` every step and grow by what a
verify observed; α = (A + a0) / (A + R + a0 + r0) with prior pseudo-counts
(a0, r0). A row that stopped drafting drifts back to the prior and so tries
again after a while: text that turns repetitive is found.

Each row decides from its own counts and the batch's cost curve only, so a
row's draft lengths never depend on the other rows' text.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import struct


@struct.dataclass
class SizingState:
    accepted: jnp.ndarray  # [B] float32 decayed count of accepted drafts
    rejected: jnp.ndarray  # [B] float32 decayed count of verifies that ended in a rejection


@dataclasses.dataclass(frozen=True)
class DraftSizing:
    """Static (hashable) under jit: the cost table is part of the compiled program."""

    verify_cost: tuple[float, ...]  # [k] for k = 0..K: cost of a step verifying k drafts, in 1-token forwards
    draft_cost: float = 0.0  # one drafted token, in 1-token target forwards
    decay: float = 0.97
    prior: tuple[float, float] = (3.0, 1.0)  # pseudo-counts (accepted, rejected): α starts at 0.75

    def __post_init__(self):
        if not self.verify_cost or any(c <= 0 for c in self.verify_cost):
            raise ValueError(f"verify_cost must be positive costs for k = 0..K, got {self.verify_cost}")
        if not 0.0 <= self.decay < 1.0 or min(self.prior) <= 0.0:
            raise ValueError(f"need 0 <= decay < 1 and positive prior counts, got {self.decay}, {self.prior}")

    @property
    def max_drafts(self) -> int:
        return len(self.verify_cost) - 1

    def init(self, batch: int) -> SizingState:
        zeros = jnp.zeros((batch,), jnp.float32)
        return SizingState(zeros, zeros)

    def acceptance(self, state: SizingState) -> jnp.ndarray:
        """[B] α: each row's estimated chance that a draft is accepted."""
        a0, r0 = self.prior
        return (state.accepted + a0) / (state.accepted + state.rejected + a0 + r0)

    def limit(self, state: SizingState, available: jnp.ndarray) -> jnp.ndarray:
        """[B] int32: drafts worth verifying per row, at most `available` (and at most K)."""
        alpha = self.acceptance(state)[:, None]
        k = jnp.arange(self.max_drafts + 1, dtype=jnp.float32)[None, :]
        gain = (1.0 - alpha ** (k + 1.0)) / (1.0 - alpha)
        cost = jnp.asarray(self.verify_cost, jnp.float32)[None, :] + k * self.draft_cost
        rate = jnp.where(k <= available[:, None], gain / cost, -jnp.inf)
        return jnp.argmax(rate, axis=1).astype(jnp.int32)  # ties: the shorter draft

    def observe(self, state: SizingState, verified: jnp.ndarray, accepted: jnp.ndarray) -> SizingState:
        """After a step: `verified` drafts of each row were checked (0: none) and `accepted` of them kept."""
        checked = verified > 0
        return SizingState(
            accepted=self.decay * state.accepted + jnp.where(checked, accepted, 0).astype(jnp.float32),
            rejected=self.decay * state.rejected + (checked & (accepted < verified)).astype(jnp.float32),
        )
