"""What a drafter is: a static object that proposes up to K tokens per row each step.

A new decoding method is a new file in this package (a drafter) and, when it
needs one, an acceptance rule; the loop in `jaxspec.decode_loop` never changes.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jaxspec import vocab_reduce
from models.protocol import Start


class Draft(NamedTuple):
    tokens: jax.Array  # [B, K] int32
    n_valid: jax.Array  # [B] int32: drafts past this index are ignored
    probs: jax.Array | None  # [B, K, V] the draft distribution q, or None for point-mass drafts
    # A tree (jaxspec/tree.py): parents[b, i] is node i's parent node, -1 under the last emitted token;
    # parents before children. None: a chain, parents i - 1.
    parents: jax.Array | None = None  # [B, K] int32
    valid: jax.Array | None = None  # [B, K] bool: a tree's nodes that exist (besides index < n_valid)
    # A self-drafter (the target drafting for itself: jaxspec/drafters/layer_skip.py) drafts on the
    # target's own cache, writing K/V past its committed lengths; the loop verifies on the cache it
    # returns here, whose committed slots are untouched and whose writes the verify overwrites. None:
    # the drafter never touched the target's cache.
    cache: Any = None


def tap_of(drafter) -> dict:
    """The keyword a target's forward and start take for the drafter's `tap`: {} for a drafter without one,
    so models without taps are never asked for one."""
    tap = getattr(drafter, "tap", None)
    return {} if tap is None else {"tap": tap}


def argmax_rows(logits: jax.Array) -> tuple[jax.Array]:
    """A row_summary (Drafter): the target's argmax after each window row, for drafters that read only that."""
    return (vocab_reduce.argmax(logits),)


def static_tree_draft(parents: tuple[int, ...], tokens: jax.Array, valid: jax.Array) -> Draft:
    """A point-mass draft over a static tree (jaxspec/static_tree.py) whose nodes exist where `valid`;
    a row with no valid node drafts nothing."""
    b, t = tokens.shape
    return Draft(
        tokens=tokens,
        n_valid=jnp.where(jnp.any(valid, axis=1), t, 0).astype(jnp.int32),
        probs=None,
        parents=jnp.broadcast_to(jnp.asarray(parents, jnp.int32), (b, t)),
        valid=valid,
    )


class Verified(NamedTuple):
    """What the target computed in a step, handed to the drafter's update."""

    n_accepted: jax.Array  # [B] drafts kept (0 for a row that was already done)
    next_token: jax.Array  # [B] the token the rule emitted after them
    path: jax.Array  # [B, K + 1] window indices of the kept tokens by depth (a chain: 0, 1, 2, ...)
    hidden: jax.Array  # [B, K + 1, D] the target's final hidden state at each window index
    window: jax.Array  # [B, K + 1] the tokens verified: the last emitted one, then the drafts
    logits: jax.Array  # [B, K + 1, V] the target's raw logits after each window index
    scored: jax.Array  # [B, K + 1] bool: window indices the target really scored (junk elsewhere)
    # The drafter's `row_summary` of the logits, each array [B, K + 1, ...] (zeros past the rows scored),
    # or None for a drafter without one.
    summary: tuple[jax.Array, ...] | None = None
    # [B, K + 1, D] the target's hidden state after layer `tap` at each window index, for a drafter with a
    # `tap` (zeros past the rows scored); None otherwise.
    tapped: jax.Array | None = None


class Context(NamedTuple):
    """What a drafter may read of the decoding state."""

    history: jax.Array  # [B, H] prompt + emitted tokens; slots >= seq_len are junk
    seq_len: jax.Array  # [B] tokens in history, the last emitted one included
    prompt_len: jax.Array  # [B]
    done: jax.Array  # [B] bool
    seeds: jax.Array  # [B] uint32: a drafter's random draws come from jaxspec.row_rng with these
    # An encoder-decoder model's input (tokens [B, S], lengths [B]), which history does not hold; else None.
    source: tuple[jax.Array, jax.Array] | None = None
    # [B] int32: the most drafts the loop will verify per row this step (jaxspec/draft_sizing.py); a
    # drafter whose drafting costs (a draft model) stops there. None outside propose.
    draft_limit: jax.Array | None = None
    # The target's cache, committed up to seq_len - 1 (a self-drafter drafts on it). None outside propose.
    target_cache: Any = None


class Drafter(Protocol):
    """Drafters are frozen dataclasses (hashable: static under jit)."""

    num_draft_tokens: int  # K, static

    def init(self, params, prompts: jax.Array, prompt_len: jax.Array, new_slots: int, start: Start) -> Any:
        """Drafter state after the user's prompts (the encoder input of an encoder-decoder model), e.g. a
        draft cache begun with the draft model's own `start(params, prompts, prompt_len, new_slots)`.
        `start` is the target's (models/protocol.py): its prefill's hidden states serve head drafters."""

    def propose(self, params, state, ctx: Context) -> tuple[Draft, Any]:
        """Up to K tokens to follow history[:, :seq_len]. Draft i is for history position seq_len + i; a
        drafter that samples draws it with `row_rng.keys(ctx.seeds, positions, row_rng.DRAFT)`, so that
        a row's drafts never depend on the other rows."""

    def update(self, params, state, ctx: Context, verified: Verified) -> Any:
        """Called after the step's commit; ctx already holds the newly emitted tokens. The token after
        window index verified.path[b, n_accepted[b]] is next_token: a head drafter reads the hidden state
        there."""

    # Optional: tap, a layer E of a decoder-only target: the target's forwards (its prefill and every
    # verify) also return the hidden state after its first E layers (models/protocol.py), handed to the
    # drafter as Start.tapped and Verified.tapped. An early exit reads its drafter's input there instead of
    # running the shallow layers again over text the target has already run.
    #
    # Optional: idle(params, state, ctx) -> (Draft, state): what `propose` would return if it drafted
    # nothing, computed without drafting (no draft forward). Where the loop's sizing lets no row draft
    # (every ctx.draft_limit 0), the loop takes it instead of `propose`, so a plain step costs what plain
    # decoding costs. Only a drafter whose state stays right through steps it sat out has one.
    #
    # Optional: row_summary(logits [B, w, V]) -> tuple of arrays [B, w, ...], what `update` reads of the
    # logits (verified.summary). The verify computes it inside each width's loop over the w rows it
    # scored, so a drafter that reads only this never makes the loop build the [B, K + 1, V] logits:
    # 34 MB a step for a 32-node tree on Gemma's 262,144 ids, 10 ms of a 50 ms step on the CPU.
