"""Speculative decoding with a separate, smaller draft model.

The draft keeps its own static cache in step with the target's. Between steps
the draft cache holds every committed token except the last emitted one, like
the target's, with one exception: when a row accepted all of its drafts, the
last draft d_K was never fed to the draft model, so the row is "pending" one
token. The next proposal therefore always feeds a two-token window:
[d_K, last] for pending rows, [last, filler] for the others (the filler lands
past the committed length and is overwritten), and reads the logits at the
matching index. That keeps shapes static with no extra draft pass.

Adaptive draft length (optional): a row stops drafting when the draft's top
probability falls below `min_confidence`, or when SpecDec++'s estimate of the
chance that some draft is rejected, 1 - prod_i q_i(d_i), exceeds
`max_reject_prob`. Between steps the draft length grows by 2 when every row
accepted all its drafts and shrinks by 1 otherwise (the schedule of Hugging
Face's assisted generation), within [1, K].
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec import row_rng
from jaxspec.drafters.base import Context, Draft, Verified
from jaxspec.row_rng import RowRandom
from jaxspec.sampling import SamplingConfig, target_distribution


@dataclasses.dataclass(frozen=True)
class AdaptiveDraft:
    min_confidence: float = 0.0  # stop drafting after a token whose top probability is below this
    max_reject_prob: float = 1.0  # SpecDec++: stop when 1 - prod(q_i(d_i)) exceeds this
    adapt_length: bool = True  # grow/shrink the draft length between steps


@struct.dataclass
class DraftModelState:
    cache: Any
    pending: jax.Array  # [B] bool: d_K of the last step is not in the draft cache yet
    n_valid: jax.Array  # [B] int32 drafts proposed in the last step
    length: jax.Array  # () int32 current draft length (== K unless adaptive)


@dataclasses.dataclass(frozen=True)
class DraftModel:
    model: Any  # any object with the model protocol (models/protocol.py), of the target's kind
    num_draft_tokens: int
    sampling: SamplingConfig
    adaptive: AdaptiveDraft | None = None

    def init(self, params, prompts, prompt_len, new_slots, start):
        b = prompts.shape[0]
        # On a mesh the draft cache is pinned as the target's is: rows over the batch axes, KV heads over tensor.
        cache = self.model.start(params, prompts, prompt_len, new_slots, start.constrain).cache
        return DraftModelState(
            cache=cache,
            pending=jnp.zeros((b,), bool),
            n_valid=jnp.zeros((b,), jnp.int32),
            length=jnp.asarray(self.num_draft_tokens, jnp.int32),
        )

    def propose(self, params, state: DraftModelState, ctx: Context):
        b = ctx.seq_len.shape[0]
        rows = jnp.arange(b)
        last = ctx.history[rows, ctx.seq_len - 1]
        prev = ctx.history[rows, jnp.maximum(ctx.seq_len - 2, 0)]
        pending = state.pending
        window = jnp.stack([jnp.where(pending, prev, last), last], axis=1)
        positions = state.cache.lengths[:, None] + jnp.arange(2)[None, :]
        out = self.model.forward(params, window, positions, state.cache)
        logits = jnp.where(pending[:, None], out.logits[:, 1], out.logits[:, 0])
        cache = out.cache.commit(1 + pending.astype(jnp.int32))
        tokens, probs, n_valid, cache = self._chain.draft(self._step, params, cache, logits, ctx, state.length)
        return Draft(tokens, n_valid, probs), state.replace(cache=cache, n_valid=n_valid)

    @property
    def _chain(self) -> "ChainDrafting":
        return ChainDrafting(self.num_draft_tokens, self.sampling, self.adaptive)

    def _step(self, params, token, cache):
        out = self.model.forward(params, token[:, None], cache.lengths[:, None], cache)
        return out.logits[:, 0], out.cache

    def update(self, params, state: DraftModelState, ctx: Context, verified: Verified):
        n_accepted = verified.n_accepted
        pending = (n_accepted == state.n_valid) & (state.n_valid > 0)
        # The target cache now holds seq_len - 1 tokens; the draft holds the same, or one fewer if pending.
        cache = state.cache.with_lengths(ctx.seq_len - 1 - pending.astype(jnp.int32))
        length = self._chain.next_length(state.length, n_accepted, state.n_valid, ctx.done)
        return state.replace(cache=cache, pending=pending, length=length)


@dataclasses.dataclass(frozen=True)
class ChainDrafting:
    """Drafting a chain token by token from a model's logits: the draft model's loop, shared with the
    self-drafters (jaxspec/drafters/layer_skip.py), which run the target itself on its own cache."""

    num_draft_tokens: int
    sampling: SamplingConfig
    adaptive: AdaptiveDraft | None = None

    def _draw(self, keys, logits):
        q = target_distribution(logits, self.sampling)
        return row_rng.categorical(keys, q, self.sampling.greedy), q

    def _keep_going(self, q, token, confidence_product):
        """Per row: whether to draft another token after `token`, and the updated running product."""
        a = self.adaptive
        if a is None:
            return jnp.ones(token.shape, bool), confidence_product
        q_token = jnp.take_along_axis(q, token[:, None], axis=1)[:, 0]
        product = confidence_product * q_token
        return (jnp.max(q, axis=-1) >= a.min_confidence) & (1.0 - product <= a.max_reject_prob), product

    def draft(self, step, params, cache, logits, ctx: Context, length):
        """(tokens [B, K], probs [B, K, V] or None under greedy, n_valid [B], cache): drafts from `logits`
        (the first draft's,
        [B, V]) on, feeding each draft through `step(params, token [B], cache) -> (logits [B, V], cache)`
        at the position cache.lengths, whose lengths then count the fed drafts.
        At most `length` (a traced () int32 <= K) drafts per row, fewer where the loop's limit or the
        adaptive stop says so."""
        k = self.num_draft_tokens
        b = ctx.seq_len.shape[0]
        rows = jnp.arange(b)
        keys = RowRandom(ctx.seeds, ctx.seq_len).keys(row_rng.DRAFT, k)
        token, q = self._draw(keys[:, 0], logits)
        drafting, product = self._keep_going(q, token, jnp.ones((b,), jnp.float32))
        tokens = jnp.zeros((b, k), jnp.int32).at[:, 0].set(token)
        probs = jnp.zeros((b, k) + q.shape[1:], q.dtype).at[:, 0].set(q)
        n_valid = jnp.ones((b,), jnp.int32)
        # Draft index i is drafted only while i < the loop's limit for the row (jaxspec/draft_sizing.py).
        limit = jnp.full((b,), k, jnp.int32) if ctx.draft_limit is None else ctx.draft_limit
        drafting &= ~ctx.done & (1 < limit)

        def more(carry):
            i, _, _, _, _, drafting, _ = carry
            return (i < length) & jnp.any(drafting)

        def draft_one(carry):
            i, cache, tokens, probs, n_valid, drafting, product = carry
            logits, cache = step(params, tokens[rows, i - 1], cache)
            token, q = self._draw(keys[:, i], logits)
            go, new_product = self._keep_going(q, token, product)
            tokens = tokens.at[:, i].set(jnp.where(drafting, token, 0))
            probs = probs.at[:, i].set(jnp.where(drafting[:, None], q, 0.0))
            n_valid = n_valid + drafting.astype(jnp.int32)
            cache = cache.commit(drafting.astype(jnp.int32))
            keep = drafting & go & (i + 1 < limit)
            return i + 1, cache, tokens, probs, n_valid, keep, jnp.where(drafting, new_product, product)

        _, cache, tokens, probs, n_valid, _, _ = jax.lax.while_loop(
            more, draft_one, (jnp.asarray(1), cache, tokens, probs, n_valid, drafting, product)
        )
        # Greedy drafts are point masses, which the rules never read as distributions.
        return tokens, None if self.sampling.greedy else probs, jnp.minimum(n_valid, length), cache

    def next_length(self, length, n_accepted, n_valid, done):
        """The next step's draft length: +2 when every active row that drafted took all its drafts, else -1,
        in [1, K]; unchanged after a step where no row drafted, or without adaptive length."""
        if self.adaptive is None or not self.adaptive.adapt_length:
            return length
        drafted = ~done & (n_valid > 0)
        all_taken = jnp.all(jnp.where(drafted, n_accepted >= n_valid, True))
        grown = jnp.clip(jnp.where(all_taken, length + 2, length - 1), 1, self.num_draft_tokens)
        return jnp.where(jnp.any(drafted), grown, length)
