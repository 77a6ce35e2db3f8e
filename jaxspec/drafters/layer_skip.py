"""Self-speculation by layer skipping (SWIFT, Xia et al. 2024): the target drafts for itself with some of
its attention and MLP sub-layers left out, on its own KV cache and its own params.

Each step feeds the last emitted token, then each draft, through the skipped
model at the positions past the target's committed length. The skipped model
attends to the committed K/V the full model wrote, which is what makes its
guesses good; its own K/V writes (only the sub-layers it runs write) land past
the committed length, where the verify's full forward overwrites them. The
loop verifies on the cache returned with the draft (jaxspec/drafters/base.py),
so the cache is never copied. Drafting stops at a row's first draft whose top
probability is below `min_confidence` (SWIFT's default: 0.8). Drafts carry
their distribution q, so sampling is lossless by the ratio rule.

With `draft_vocab` = N, each row drafts over its own N ids taken from the
text at hand (jaxspec/context_vocab.py), reading N rows of the head instead of
all V: on Gemma 3 270M the head is 63% of a forward's weights, so without this
no skip set can make drafting cheap.

`model` is the target seen through its skip set (models/layer_skip.py); its
params are the target's own, passed again as the drafter's params (no copy).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec.context_vocab import ContextVocab
from jaxspec.drafters.base import Context, Draft, Verified, argmax_rows
from jaxspec.drafters.draft_model import AdaptiveDraft, ChainDrafting
from jaxspec.sampling import SamplingConfig

SWIFT_MIN_CONFIDENCE = 0.8


@struct.dataclass
class LayerSkipState:
    n_valid: jax.Array  # [B] int32 drafts proposed in the last step
    length: jax.Array  # () int32 current draft length (== K unless adaptive)
    vocab: ContextVocab | None  # each row's draft vocabulary; None: the whole vocabulary


@dataclasses.dataclass(frozen=True)
class LayerSkip:
    model: Any  # the target through its skip set: models.layer_skip.SkippedModel
    num_draft_tokens: int
    sampling: SamplingConfig
    min_confidence: float = SWIFT_MIN_CONFIDENCE
    adapt_length: bool = False
    draft_vocab: int | None = None  # N ids per row, from the context; None: all V

    @property
    def _chain(self) -> ChainDrafting:
        adaptive = AdaptiveDraft(min_confidence=self.min_confidence, adapt_length=self.adapt_length)
        return ChainDrafting(self.num_draft_tokens, self.sampling, adaptive)

    def init(self, params, prompts, prompt_len, new_slots, start):
        b, p = prompts.shape
        vocab = None
        if self.draft_vocab is not None:
            in_prompt = jnp.arange(p)[None, :] < prompt_len[:, None]
            vocab = ContextVocab.empty(b, self.draft_vocab, self.model.vocab_size).add(prompts, in_prompt)
        return LayerSkipState(jnp.zeros((b,), jnp.int32), jnp.asarray(self.num_draft_tokens, jnp.int32), vocab)

    def _step(self, vocab: ContextVocab | None):
        def step(params, token, cache):
            if vocab is None:
                out = self.model.forward(params, token[:, None], cache.lengths[:, None], cache)
                return out.logits[:, 0], out.cache
            out = self.model.forward(params, token[:, None], cache.lengths[:, None], cache, vocab=vocab.ids)
            return vocab.full_logits(out.logits[:, 0]), out.cache

        return step

    def propose(self, params, state: LayerSkipState, ctx: Context):
        cache = ctx.target_cache
        committed = cache.lengths
        last = jnp.take_along_axis(ctx.history, (ctx.seq_len - 1)[:, None], axis=1)[:, 0]
        step = self._step(state.vocab)
        logits, cache = step(params, last, cache)
        tokens, probs, n_valid, cache = self._chain.draft(
            step, params, cache.commit(jnp.ones_like(committed)), logits, ctx, state.length
        )
        draft = Draft(tokens, n_valid, probs, cache=cache.with_lengths(committed))
        return draft, state.replace(n_valid=n_valid)

    def idle(self, params, state: LayerSkipState, ctx: Context):
        """No drafts, on the target's cache untouched (Drafter.idle): nothing here depends on drafting."""
        b, k = ctx.seq_len.shape[0], self.num_draft_tokens
        none = jnp.zeros((b,), jnp.int32)
        probs = None if self.sampling.greedy else jnp.zeros((b, k, self.model.vocab_size), jnp.float32)
        return Draft(jnp.zeros((b, k), jnp.int32), none, probs, cache=ctx.target_cache), state.replace(n_valid=none)

    row_summary = staticmethod(argmax_rows)  # what the context vocabulary learns from

    def update(self, params, state: LayerSkipState, ctx: Context, verified: Verified):
        length = self._chain.next_length(state.length, verified.n_accepted, state.n_valid, ctx.done)
        vocab = state.vocab
        if vocab is not None:
            # What the target predicted at every index it scored, and the token it emitted.
            (predicted,) = verified.summary
            tokens = jnp.concatenate([verified.next_token[:, None], predicted], axis=1)
            valid = jnp.concatenate([verified.scored[:, :1], verified.scored], axis=1)  # index 0: the row ran
            vocab = vocab.add(tokens, valid)
        return state.replace(length=length, vocab=vocab)
