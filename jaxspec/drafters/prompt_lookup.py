"""Prompt lookup / reference copying (Saxena 2023; LLMA, Yang et al. 2023), as a chain or as a tree.

Find the last n tokens (n from max_ngram down to 1) earlier in the row's own
text (prompt + generated), in an encoder-decoder model's input, or in a
reference document, and propose the tokens that followed the match. The
longest n wins; among equal n, the most recent match in the row's text, then
the earliest in the encoder input, then the earliest in the reference.
`PromptLookup` copies after the best match (a chain); `PromptLookupTree`
copies after the best M matches and merges their common prefixes into a
trie, so a step can accept whichever continuation the target takes.
Everything is a static-shape comparison over the whole buffer, so it runs
inside the loop. Drafts are point masses (no q).
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


def _matches(ctx: Context, params, max_ngram: int, count: int, depth: int):
    """The `count` best matches: (tokens [B, count, depth] copied after each, available [B, count, depth]).

    Sources are the row's own text, then the encoder input (ctx.source), then the user's reference
    (params); each continuation start gets the longest n whose n-gram before it matches the row's last
    n tokens, and starts are ranked by (n, source, recency in the row's text or earliness elsewhere).
    """
    history, seq_len = ctx.history, ctx.seq_len
    b, h = history.shape
    rows = jnp.arange(b)[:, None]
    sources = [(history, seq_len)] + [r for r in (ctx.source, params) if r is not None]
    width = max(text.shape[1] for text, _ in sources)
    rank_scale = (len(sources) + 1) * width
    texts, ends, priorities, offset = [], [], [], 0
    for i, (text, length) in enumerate(sources):
        own = i == 0
        longest = jnp.zeros(text.shape, jnp.int32)  # [B, L] by continuation start
        for n in range(1, max_ngram + 1):
            suffix = history[rows, jnp.clip(seq_len[:, None] - n + jnp.arange(n)[None, :], 0, h - 1)]
            exclude = seq_len - n if own else length
            match = _ngram_matches(text, length, suffix, n, exclude) & (seq_len >= n + own)[:, None]
            after = jnp.pad(match, ((0, 0), (n, 0)))[:, : text.shape[1]]  # start j + n of each match at j
            longest = jnp.where(after, n, longest)
        start = jnp.arange(text.shape[1])[None, :]
        order = start if own else width - 1 - start  # the most recent in the row's text, else the earliest
        priorities.append(jnp.where(longest > 0, longest * rank_scale + (len(sources) - i) * width + order + 1, 0))
        texts.append(text)
        ends.append(jnp.broadcast_to(offset + length[:, None], text.shape))
        offset += text.shape[1]
    priority, chosen = jax.lax.top_k(jnp.concatenate(priorities, axis=1), count)  # [B, count]
    text, end = jnp.concatenate(texts, axis=1), jnp.concatenate(ends, axis=1)
    at = chosen[:, :, None] + jnp.arange(depth)[None, None, :]  # [B, count, depth]
    limit = jnp.take_along_axis(end, chosen, axis=1)[:, :, None]
    tokens = text[rows[:, :, None], jnp.clip(at, 0, text.shape[1] - 1)]
    return tokens.astype(jnp.int32), (priority[:, :, None] > 0) & (at < limit)


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
        tokens, available = _matches(ctx, params, self.max_ngram, 1, self.num_draft_tokens)
        return Draft(tokens[:, 0], jnp.sum(available[:, 0], axis=1).astype(jnp.int32), None), state

    def idle(self, params, state, ctx: Context):
        """No drafts (Drafter.idle), without matching over the whole text: where the sizing lets no row
        draft K tokens, it lets none draft the fewer a match would give."""
        b = ctx.seq_len.shape[0]
        return Draft(jnp.zeros((b, self.num_draft_tokens), jnp.int32), jnp.zeros((b,), jnp.int32), None), state

    def update(self, params, state, ctx: Context, verified):
        return state


@dataclasses.dataclass(frozen=True)
class PromptLookupTree:
    """The best `branches` matches' continuations of up to `depth` tokens, merged into a trie.

    Node (d, m), the d-th token after match m, sits at index d * branches + m (nodes sorted by depth).
    A node repeating an earlier branch's node (the same tokens from depth 0 to d) is left out, and its
    children hang under that earlier node instead.
    """

    branches: int
    depth: int
    max_ngram: int = 3

    @property
    def num_draft_tokens(self) -> int:
        return self.branches * self.depth

    def init(self, params, prompts, prompt_len, new_slots, start):
        return ()

    def propose(self, params, state, ctx: Context):
        """params: as PromptLookup's."""
        m, depth = self.branches, self.depth
        tokens, available = _matches(ctx, params, self.max_ngram, m, depth)  # [B, M, D]
        b = tokens.shape[0]
        # same[b, d, i, j]: branches i and j carry the same tokens at depths 0..d.
        equal = (tokens[:, :, None, :] == tokens[:, None, :, :]) & available[:, :, None, :] & available[:, None, :, :]
        same = jnp.cumprod(jnp.moveaxis(equal, 3, 1), axis=1).astype(bool)
        earlier = jnp.arange(m)[None, :] <= jnp.arange(m)[:, None]  # [i, j]: j <= i
        first = jnp.argmax(same & earlier[None, None], axis=3)  # [B, D, M]: the first branch like branch i
        valid = available.transpose(0, 2, 1) & (first == jnp.arange(m)[None, None, :])
        node = lambda d, branch: d * m + branch
        parents = jnp.concatenate(
            [jnp.full((b, 1, m), -1, jnp.int32), node(jnp.arange(depth - 1)[None, :, None], first[:, :-1])], axis=1
        )
        valid &= ~ctx.done[:, None, None]
        return Draft(
            tokens=tokens.transpose(0, 2, 1).reshape(b, depth * m),
            n_valid=jnp.where(jnp.any(valid, axis=(1, 2)), depth * m, 0).astype(jnp.int32),
            probs=None,
            parents=parents.reshape(b, depth * m).astype(jnp.int32),
            valid=valid.reshape(b, depth * m),
        ), state

    def update(self, params, state, ctx: Context, verified):
        return state
