"""Prompt lookup / reference copying (Saxena 2023; LLMA, Yang et al. 2023).

Find the last n tokens (n from max_ngram down to 1) earlier in the row's own
text (prompt + generated), in an encoder-decoder model's input, or in a
reference document, and propose the K tokens that followed that match. The
longest n wins; among equal n, the most recent match in the row's text, then
the earliest in the encoder input, then the earliest in the reference. Everything is a
static-shape comparison over the whole buffer, so it runs inside the loop.
Drafts are point masses (no q), verified with `accept_point_mass`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxspec.drafters.base import Context, Draft


def _ngram_matches(text: jax.Array, text_len: jax.Array, suffix: jax.Array, n: int, exclude_from: jax.Array):
    """match[b, j]: text[b, j:j+n] == suffix[b] and at least one token follows before exclude_from[b].

    text: [B, L]; suffix: [B, n]; a match must satisfy j + n < min(text_len, exclude_from + n), i.e. it
    is not the suffix itself and has a continuation inside the text.
    """
    b, length = text.shape
    j = jnp.arange(length)[None, :]
    match = jnp.ones((b, length), bool)
    for m in range(n):
        shifted = jnp.concatenate([text[:, m:], jnp.full((b, m), -1, text.dtype)], axis=1)
        match &= shifted == suffix[:, m : m + 1]
    return match & (j + n < text_len[:, None]) & (j < exclude_from[:, None])


@dataclasses.dataclass(frozen=True)
class PromptLookup:
    num_draft_tokens: int
    max_ngram: int = 3

    def init(self, params, prompts, prompt_len, new_slots, start):
        return ()

    def propose(self, params, state, ctx: Context):
        """params: None, or (reference[B, R] int32, reference_len[B] int32).

        An encoder-decoder model's input (ctx.source) is searched like a reference, before the user's.
        """
        k = self.num_draft_tokens
        history, seq_len = ctx.history, ctx.seq_len
        b, h = history.shape
        rows = jnp.arange(b)[:, None]
        references = [r for r in (ctx.source, params) if r is not None]

        best_n = jnp.zeros((b,), jnp.int32)
        source = jnp.zeros((b,), jnp.int32)  # 0: the row's own text; i + 1: references[i]
        start = jnp.zeros((b,), jnp.int32)  # index of the first copied token
        for n in range(self.max_ngram, 0, -1):
            suffix = history[rows, jnp.clip(seq_len[:, None] - n + jnp.arange(n)[None, :], 0, h - 1)]
            in_text = _ngram_matches(history, seq_len, suffix, n, seq_len - n) & (seq_len >= n + 1)[:, None]
            found = jnp.any(in_text, axis=1)
            where = jnp.zeros((b,), jnp.int32)
            at = h - 1 - jnp.argmax(in_text[:, ::-1], axis=1)  # the most recent match in the text
            for i, (reference, ref_len) in enumerate(references):
                in_ref = _ngram_matches(reference, ref_len, suffix, n, ref_len) & (seq_len >= n)[:, None]
                first = ~found & jnp.any(in_ref, axis=1)
                where = jnp.where(first, i + 1, where)
                at = jnp.where(first, jnp.argmax(in_ref, axis=1), at)  # the earliest match in a reference
                found |= first
            take = (best_n == 0) & found
            best_n = jnp.where(take, n, best_n)
            source = jnp.where(take, where, source)
            start = jnp.where(take, at + n, start)

        idx = start[:, None] + jnp.arange(k)[None, :]
        tokens = history[rows, jnp.clip(idx, 0, h - 1)]
        available = seq_len - start
        for i, (reference, ref_len) in enumerate(references):
            mine = source == i + 1
            copied = reference[rows, jnp.clip(idx, 0, reference.shape[1] - 1)]
            tokens = jnp.where(mine[:, None], copied, tokens)
            available = jnp.where(mine, ref_len - start, available)
        n_valid = jnp.where(best_n > 0, jnp.clip(available, 0, k), 0).astype(jnp.int32)
        return Draft(tokens.astype(jnp.int32), n_valid, None), state

    def update(self, params, state, ctx: Context, verified):
        return state
