"""Jacobi decoding and speculative Jacobi decoding: the target refines its own guesses, one iteration a step.

The drafter keeps a window of W guesses for the W positions after the last
emitted token. Each step verifies them as a chain, so the forward that checks
them is also one Jacobi iteration: the target's token after each window index
is a new guess for the next position. After the step the row has emitted
n_accepted + 1 tokens; the window moves on by that many positions and the
guesses of the positions still ahead are the target's new ones (its argmax, or
for speculative Jacobi a draw from its distribution, kept together with that
distribution as the draft's q). Positions beyond what the forward reached take
the target's token at the window's last index again: a point-mass guess, which
the rules accept whatever it is drawn from.

Guesses keep their absolute positions, as Jacobi iteration (and SJD) needs; the
shift per row is a gather, so shapes stay static. The first window is the
prompt's last token repeated.

Why lossless. Jacobi's guesses are point masses: the chain rule accepts a guess
with probability p(guess) and draws the rest from p without it, whatever rule
made the guess (under greedy: exact matching). Speculative Jacobi's guess at a
position is a draw from q, the target's distribution there given the previous
window; the ratio rule min(1, p/q) with the residual then emits exactly p.
The draw is keyed by the row's seed and the position (row_rng.DRAFT), fresh
against the acceptance coins (row_rng.ACCEPT); a position is tested at most
once, since a test either accepts it or emits the residual's token there.

Fixed points: the iteration reaches the greedy continuation of a block of W
positions in at most W steps; where the target's token does not depend on the
guesses before it, in one (tests/test_jacobi.py pins both).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec import row_rng
from jaxspec.drafters.base import Context, Draft, Verified, argmax_rows
from jaxspec.sampling import SamplingConfig, target_distribution


@struct.dataclass
class JacobiState:
    guesses: jax.Array  # [B, W] int32: guesses[b, j] for history position seq_len[b] + j
    q: jax.Array | None  # [B, W, V] the distribution each guess was drawn from (speculative Jacobi), else None


@dataclasses.dataclass(frozen=True)
class Jacobi:
    window: int  # W
    sampling: SamplingConfig
    sampled: bool = False  # speculative Jacobi: guesses drawn from the target's distribution, with q
    vocab: int = 0  # needed when sampled (q's width)

    @property
    def num_draft_tokens(self) -> int:
        return self.window

    def init(self, params, prompts, prompt_len, new_slots, start):
        rows = jnp.arange(start.tokens.shape[0])
        last = start.tokens[rows, start.lengths - 1]
        guesses = jnp.broadcast_to(last[:, None], (last.shape[0], self.window)).astype(jnp.int32)
        return JacobiState(guesses, self._point_mass(guesses) if self.sampled else None)

    def _point_mass(self, tokens):
        return jax.nn.one_hot(tokens, self.vocab, dtype=jnp.float32)

    def propose(self, params, state: JacobiState, ctx: Context):
        n_valid = jnp.where(ctx.done, 0, self.window).astype(jnp.int32)
        return Draft(state.guesses, n_valid, state.q), state

    row_summary = staticmethod(argmax_rows)  # greedy guesses read the argmax only; sampled ones read p

    def update(self, params, state: JacobiState, ctx: Context, verified: Verified):
        """The guess for position seq_len + j comes from window index n_accepted + 1 + j where the
        target scored it, else it is the token at the last scored index."""
        b, w1 = verified.window.shape
        rows = jnp.arange(b)[:, None]
        advance = verified.n_accepted + 1
        # The target's token after each window index: the next iteration's guess for the position after it.
        positions = ctx.seq_len[:, None] - advance[:, None] + jnp.arange(w1)[None, :]
        if self.sampled:
            p = target_distribution(verified.logits, self.sampling)
            y = row_rng.categorical(row_rng.keys(ctx.seeds, positions, row_rng.DRAFT), p, self.sampling.greedy)
        else:
            (y,) = verified.summary
        last_scored = jnp.max(jnp.where(verified.scored, jnp.arange(w1)[None, :], 0), axis=1)
        source = advance[:, None] + jnp.arange(self.window)[None, :]
        fresh = (source < w1) & jnp.take_along_axis(verified.scored, jnp.minimum(source, w1 - 1), axis=1)
        source = jnp.where(fresh, source, last_scored[:, None])
        guesses = y[rows, source]
        if not self.sampled:
            return JacobiState(guesses, None)
        q = jnp.where(fresh[:, :, None], p[rows, source], self._point_mass(guesses))
        return JacobiState(guesses, q)
