"""Self-speculation with the exit layer chosen as decoding goes (DEL, arXiv 2504.05598): the target drafts
for itself through its first E layers, its final norm and its head, with E and the draft length picked
every step from what the drafts at each exit have been accepted so far.

Each candidate exit E drafts exactly as layer skipping with the set exit:E
(jaxspec/drafters/layer_skip.py): on the target's own cache and params, a
draft's distribution q carried for the ratio rule, drafting stopped at a
row's first unconfident draft. One compiled branch per exit, chosen by
models/switch_in_place.py so the target's cache is updated in place, plus
a plain step that drafts nothing.

The choice. For exit E and k drafts a step is expected to emit
g_E(k) = 1 + S_E(1) + ... + S_E(k) tokens, S_E(j) the chance that drafts 1..j
are all accepted, at a cost of c(k + 1) + k · r_E target forwards: c the
verify cost per width (the measured curve, jaxspec/cost_model.py; 1 for
every width without one, as DEL's own layer count assumes), r_E the share of
the target's weights a draft token at exit E reads (its layers and the head
rows it scores). The step takes the (E, k) of most tokens per cost; k = 0,
a plain step of one token at cost 1, wins where no exit pays.

S_E comes from decayed counts of how often draft j at exit E was reached in
a verify and accepted, per depth as jaxspec/draft_sizing.py estimates them
but averaged over the batch's rows (one exit per step serves the whole batch:
the verify is one forward). The counts start from a prior centred on how
often exit E's argmax agrees with the full model's over the prompts
(teacher-forced, as the layer-skip search scores skip sets: one forward per
exit before decoding; methods.prompt_agreement), or on 0.75 without one.
DEL scores every exit every step with "shadow tokens", the head applied to
every layer's hidden state of the verified tokens; on Gemma 3 270M the head
is 63% of a forward's weights, so that would cost more than the drafting.
Here only the exit drafted with is observed. All counts decay every step, so
an exit not chosen for a while drifts back to its prior and is tried again
if that prior pays (and a plain-decoding stretch ends the same way).

The choice depends on verified tokens only, never on the current step's
draws, so every step is lossless by the ratio rule whichever exit drafts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec.drafters.base import Context, Verified
from jaxspec.drafters.layer_skip import LayerSkip, LayerSkipState
from models.switch_in_place import switch_in_place


@struct.dataclass
class DynamicExitState:
    inner: LayerSkipState  # the drafting state all exits share (draft vocabulary, last step's drafts)
    trials: jax.Array  # [E, K] float32 decayed per-row mean count of verifies that reached draft j at exit e
    accepts: jax.Array  # [E, K] float32 ... that accepted it
    chosen: jax.Array  # () int32 the exit drafted with in the last step; E: no drafts
    uses: jax.Array  # [E + 1] int32 steps each exit was chosen (the last: plain steps)


@dataclasses.dataclass(frozen=True)
class DynamicExit:
    drafters: tuple[LayerSkip, ...]  # one per candidate exit: the target through exit:E
    exits: tuple[int, ...]  # the candidate exit layers, as the drafters run them
    draft_costs: tuple[float, ...]  # r_E per exit: a draft token's cost in target forwards
    verify_cost: tuple[float, ...] | None = None  # c(k + 1) for k = 0..K; None: 1 for every width
    decay: float = 0.97
    prior: tuple[float, float] = (3.0, 1.0)  # pseudo-counts (accepted, rejected): acceptance starts at 0.75
    # Per exit, the acceptance the prior's pseudo-counts start from instead (measured on the prompts:
    # prompt_agreement); None: prior[0] / sum(prior) for every exit.
    prior_acceptance: tuple[float, ...] | None = None

    def __post_init__(self):
        if not self.drafters or len({len(self.drafters), len(self.exits), len(self.draft_costs)}) != 1:
            raise ValueError("one drafter, exit layer and draft cost per candidate exit")
        if self.verify_cost is not None and len(self.verify_cost) != self.num_draft_tokens + 1:
            raise ValueError(f"verify_cost needs K + 1 = {self.num_draft_tokens + 1} entries")
        if self.prior_acceptance is not None and len(self.prior_acceptance) != len(self.exits):
            raise ValueError("one prior acceptance per candidate exit")

    @property
    def num_draft_tokens(self) -> int:
        return self.drafters[0].num_draft_tokens

    @property
    def _verify_cost(self) -> jax.Array:
        k = self.num_draft_tokens
        return jnp.asarray(self.verify_cost or (1.0,) * (k + 1), jnp.float32)

    def init(self, params, prompts, prompt_len, new_slots, start) -> DynamicExitState:
        zeros = jnp.zeros((len(self.exits), self.num_draft_tokens), jnp.float32)
        return DynamicExitState(
            self.drafters[0].init(params, prompts, prompt_len, new_slots, start), zeros, zeros,
            jnp.asarray(len(self.exits), jnp.int32), jnp.zeros((len(self.exits) + 1,), jnp.int32),
        )

    def expected_tokens(self, state: DynamicExitState) -> jax.Array:
        """[E, K + 1] g_E(k): tokens a step emits in expectation with k drafts from exit E."""
        a0, r0 = self.prior
        if self.prior_acceptance is not None:  # the same pseudo-count weight, centred on each exit's own
            a0 = jnp.asarray(self.prior_acceptance, jnp.float32)[:, None] * (a0 + r0)
            r0 = sum(self.prior) - a0
        survival = jnp.cumprod((state.accepts + a0) / (state.trials + a0 + r0), axis=1)
        return jnp.concatenate([jnp.ones((len(self.exits), 1)), 1.0 + jnp.cumsum(survival, axis=1)], axis=1)

    def choose(self, state: DynamicExitState) -> tuple[jax.Array, jax.Array]:
        """(exit index, drafts) of most expected tokens per cost; (E, 0) for a plain step."""
        k = jnp.arange(self.num_draft_tokens + 1)
        cost = self._verify_cost[None, :] + k[None, :] * jnp.asarray(self.draft_costs, jnp.float32)[:, None]
        best = jnp.argmax((self.expected_tokens(state) / cost).ravel())  # the first best: the cheaper exit
        exit_index, drafts = jnp.divmod(best, self.num_draft_tokens + 1)
        return jnp.where(drafts == 0, len(self.exits), exit_index).astype(jnp.int32), drafts.astype(jnp.int32)

    def propose(self, params, state: DynamicExitState, ctx: Context):
        exit_index, drafts = self.choose(state)
        inner = state.inner.replace(length=drafts)

        def branch(drafter):
            def run(carried):  # the target's cache goes in through the carried draft, and out with it
                return drafter.propose(params, inner, ctx._replace(target_cache=carried[0].cache))

            return run

        # A plain step (index E, past the branches) keeps the carried value: no drafts, on the target's
        # cache untouched. switch_in_place, not lax.switch: a conditional's outputs are fresh buffers, so
        # XLA copied the whole cache out of the taken branch every step, plain steps too.
        plain = self.drafters[0].idle(params, inner, ctx)
        draft, inner = switch_in_place(exit_index, [branch(d) for d in self.drafters], plain)
        uses = state.uses.at[exit_index].add(1)
        return draft, state.replace(inner=inner, chosen=exit_index, uses=uses)

    def describe(self, state: DynamicExitState) -> dict:
        """Steps each exit drafted (by its layer count) and plain steps, for reports."""
        uses = [int(n) for n in state.uses]
        return {"steps_per_exit": {**{str(e): n for e, n in zip(self.exits, uses)}, "plain": uses[-1]}}

    def row_summary(self, logits):
        """The exits' shared update reads what the first exit's does."""
        return self.drafters[0].row_summary(logits)

    def update(self, params, state: DynamicExitState, ctx: Context, verified: Verified) -> DynamicExitState:
        inner = self.drafters[0].update(params, state.inner, ctx, verified)
        # Per-row mean evidence about the chosen exit: draft j was reached if j < the row's drafts and every
        # draft before it was accepted; rows that drafted nothing (done, or at their budget) say nothing.
        j = jnp.arange(self.num_draft_tokens)[None, :]
        n_valid = state.inner.n_valid[:, None]
        reached = ((j < n_valid) & (j <= verified.n_accepted[:, None])).astype(jnp.float32)
        kept = (j < verified.n_accepted[:, None]).astype(jnp.float32) * reached
        rows = jnp.maximum(jnp.sum(n_valid > 0), 1)
        chosen = (jnp.arange(len(self.exits)) == state.chosen)[:, None]
        trials = self.decay * state.trials + jnp.where(chosen, jnp.sum(reached, 0) / rows, 0.0)
        accepts = self.decay * state.accepts + jnp.where(chosen, jnp.sum(kept, 0) / rows, 0.0)
        return state.replace(inner=inner, trials=trials, accepts=accepts)
