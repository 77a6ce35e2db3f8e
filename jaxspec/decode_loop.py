"""The one decode loop: draft → verify → accept → commit, inside a single lax.while_loop.

Invariant between steps, per row b:
    history[b, :seq_len[b]]   prompt + every emitted token
    cache.lengths[b]          = seq_len[b] - 1: the last emitted token is not in the
                              cache yet; the next step's window starts with it.
Each step feeds the target the window [last token, draft_1..draft_K], so one
forward pass both commits the last token and scores the K drafts. The row keeps
n_accepted drafts plus one token drawn by the acceptance rule, so it always
advances by at least one token. Rows that are done freeze: they emit nothing,
commit nothing, and their (ignored) writes land past their committed length.

This module talks to the model only through the protocol of models/protocol.py
(start / forward / cache.commit) and imports no model family.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxspec import row_rng
from jaxspec.acceptance import accept_point_mass, accept_ratio
from jaxspec.draft_sizing import DraftSizing
from jaxspec.drafters.base import Context, Verified, argmax_rows, tap_of
from jaxspec.errors import InputError
from jaxspec.row_rng import RowRandom
from jaxspec.sampling import SamplingConfig, target_distribution
from jaxspec.sharding import ShardingPlan
from jaxspec.stopping import emit_count
from jaxspec.tree import TreeShape, accept_tree_point_mass, ending_at, tree_ratio_walk, tree_shape
from jaxspec.unit_step import unit_step
from jaxspec.widths import over_needed_rows, verify_widths
from models.switch_in_place import switch_in_place

# Incremented each time the decode program is traced; tests use it to prove
# that a new prompt of a known bucket reuses the compiled program.
TRACE_COUNTS: collections.Counter = collections.Counter()


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """Static settings of one compiled decode program."""

    max_new_tokens: int
    sampling: SamplingConfig
    plan: ShardingPlan | None = None  # pins the cache layout on a mesh
    sizing: DraftSizing | None = None  # None: every step verifies all the drafts the drafter proposes


@struct.dataclass
class DecodeState:
    cache: Any
    history: jax.Array  # [B, H] int32
    seq_len: jax.Array  # [B] int32
    prompt_len: jax.Array  # [B] int32
    done: jax.Array  # [B] bool
    calls: jax.Array  # [B] int32 target calls while the row was active
    accept_lengths: jax.Array  # [B, max_new] tokens emitted per target call
    seeds: jax.Array  # [B] uint32: each row's randomness (jaxspec/row_rng.py)
    stops: jax.Array  # [S, M] int32: stop tokens and sequences (jaxspec/stopping.py)
    source: Any  # (tokens [B, S], lengths [B]): an encoder-decoder model's input; None for decoder-only
    drafter_state: Any
    sizing_state: Any  # jaxspec.draft_sizing.SizingState, or None without sizing

    def context(self, draft_limit=None, target_cache=None) -> Context:
        return Context(
            self.history, self.seq_len, self.prompt_len, self.done, self.seeds, self.source, draft_limit, target_cache
        )


def _emitted(draft_tokens, n_accepted, next_token):
    """[B, K+1]: the accepted drafts, then next_token at index n_accepted (junk after)."""
    b, k = draft_tokens.shape
    idx = jnp.arange(k + 1)[None, :]
    padded = jnp.concatenate([draft_tokens, jnp.zeros((b, 1), jnp.int32)], axis=1)
    return jnp.where(idx == n_accepted[:, None], next_token[:, None], padded)


def _argmax(w, logits):
    return argmax_rows(logits)[0]


def verify_forward(model, params, window, cache, needed, shape: TreeShape | None = None, draw=_argmax,
                   summarize=None, tap: dict | None = None):
    """The target forward over the first w window tokens, w the smallest compiled width >= needed.

    Scoring costs grow with the window on memory-light hardware (on a CPU a
    9-token forward costs several 1-token ones), so a step verifies only as
    many tokens as some row actually drafted: a step where no row drafted costs
    what a plain decoding step costs. Logits, hidden states and argmax ids past
    w are zeros and never read: every rule reads positions <= n_valid < w. A
    tree's window sits at positions lengths + depth and sees its ancestors only;
    its first w entries are a tree too, since parents come before children.

    The target's token after each scored index, `draw(w, logits [B, w, V])`
    (its argmax by default), is taken inside, over the w rows scored, so the
    point-mass rules never build a [B, K + 1, V] distribution (262,144 entries
    a row on Gemma) nor draw for rows nobody drafted, and so is the drafter's
    `summarize(logits)` (its row_summary, or None): a drafter that reads
    neither the logits nor the distributions leaves the logits dead. `tap` is the drafter's (tap_of).
    Returns (logits [B, K+1, V], hidden [B, K+1, D], cache, draws [B, K+1] int32, summary or None, tapped
    [B, K+1, D] or None).
    """
    tap = tap or {}

    def run(w, cache):
        if shape is None:
            positions, mask = cache.lengths[:, None] + jnp.arange(w)[None, :], None
        else:
            positions, mask = cache.lengths[:, None] + shape.depth[:, :w], shape.ancestors[:, :w, :w]
        out = model.forward(params, window[:, :w], positions, cache, mask, **tap)
        extra = (() if summarize is None else tuple(summarize(out.logits))) + ((out.tapped,) if tap else ())
        return (out.logits, out.hidden, draw(w, out.logits), *extra), out.cache

    (logits, hidden, draws, *extra), cache = over_needed_rows(run, verify_widths(window.shape[1] - 1), needed, cache)
    tapped = extra.pop() if tap else None
    return logits, hidden, cache, draws, None if summarize is None else tuple(extra), tapped


def target_draws(spec: DecodeSpec, rand: RowRandom, draft, depth):
    """`draw` for verify_forward: the target's token after each window index (depth [B, K+1] its distance
    from the window's start). Under greedy, its argmax, which every rule reads; under sampling, for
    point-mass drafts, the very draw plain sampling makes at that history position, which their rule
    reads (acceptance.accept_point_mass); drafts with q take the ratio rule on p instead."""
    if spec.sampling.greedy or draft.probs is not None:
        return _argmax

    def draw(w, logits):
        keys = rand.keys_for(row_rng.TARGET, depth[:, :w])
        return row_rng.categorical(keys, target_distribution(logits, spec.sampling))

    return draw


def accept(spec: DecodeSpec, rand: RowRandom, logits, draws, draft, n_valid, shape: TreeShape | None):
    """(n_accepted [B], next_token [B], path [B, K+1] or None for a chain) by the draft's rule.

    Under greedy every distribution is a point mass (a draft's q too), so every draft takes the point-mass
    rule on the verify's argmax, and so do point-mass drafts under sampling on the target's draws
    (`target_draws`): the [B, K+1, V] distribution is built only for the ratio rules (p is dead otherwise),
    and only in steps where some row drafted (`_ratio_rule`)."""
    greedy = spec.sampling.greedy
    k = draft.tokens.shape[1]
    valid = jnp.arange(k)[None, :] < n_valid[:, None]
    if shape is not None and draft.valid is not None:
        valid &= draft.valid
    if draft.probs is None or greedy:
        p = None if greedy else target_distribution(logits, spec.sampling)
        draws = draws if greedy or draft.probs is None else None
        if shape is None:
            return (*accept_point_mass(rand, p, draft.tokens, n_valid, greedy, draws), None)
        return accept_tree_point_mass(rand, p, draft.tokens, valid, shape, greedy, draws)
    return _ratio_rule(spec.sampling, rand, logits, draft, n_valid, valid, shape)


def _ratio_rule(sampling: SamplingConfig, rand: RowRandom, logits, draft, n_valid, valid, shape):
    """The ratio rules for sampled drafts with q, where some row drafted; elsewhere plain sampling.

    With no valid draft in any row both rules draw next_token from p at window index 0 with the row's
    TARGET key there and accept nothing, so a step that drafts nothing (a sized step, or an idle
    self-drafter) draws exactly that, from p over one position, instead of building p over all K + 1
    and walking q (on Gemma's 262,144-way vocabulary at batch 8, 42 MB of p and q per step)."""
    b = logits.shape[0]

    def ratio(_):
        p = target_distribution(logits, sampling)
        if shape is None:
            return (*accept_ratio(rand, p, draft.probs, draft.tokens, n_valid), None)
        return tuple(tree_ratio_walk(rand, p, draft.probs, draft.tokens, valid, shape))

    def plain(_):
        nothing = jnp.zeros((b,), jnp.int32)
        p = target_distribution(logits[:, 0], sampling)
        token = row_rng.categorical(rand.keys_at(row_rng.TARGET, nothing), p)
        return (nothing, token, None) if shape is None else tuple(ending_at(shape, nothing, token))

    return jax.lax.cond(jnp.any(valid), ratio, plain, None)


def _propose(drafter, params, state, ctx: Context, idle: bool):
    """drafter.propose; with `idle`, its `idle` instead where no row may draft (ctx.draft_limit all 0),
    chosen at run time without copying the target's cache (models/switch_in_place.py)."""
    if not idle:
        return drafter.propose(params, state, ctx)

    def drafting(carried):
        draft, state = carried
        return drafter.propose(params, state, ctx._replace(target_cache=draft.cache))

    return switch_in_place(jnp.where(jnp.any(ctx.draft_limit > 0), 0, -1), [drafting],
                           drafter.idle(params, state, ctx))


def decode_step(model, drafter, spec: DecodeSpec, params, drafter_params, state: DecodeState) -> DecodeState:
    b = state.seq_len.shape[0]
    rows = jnp.arange(b)[:, None]
    active = ~state.done

    k = drafter.num_draft_tokens
    sizing = spec.sizing
    # A chain is sized twice: before drafting, assuming all K drafts come (a draft model stops there), and
    # after, from what each row actually proposed (prompt lookup knows its match length only then). A tree
    # is sized once it is drafted: a prefix of its nodes is verified (jaxspec/draft_sizing.py); its drafters
    # read no limit.
    full = jnp.full((b,), k, jnp.int32)
    limit = full if sizing is None else sizing.limit(state.sizing_state, full, active)
    draft, drafter_state = _propose(drafter, drafter_params, state.drafter_state, state.context(limit, state.cache),
                                    idle=sizing is not None and hasattr(drafter, "idle"))
    shape = None if draft.parents is None else tree_shape(draft.parents)
    n_valid = jnp.where(active, draft.n_valid if shape is not None else jnp.minimum(draft.n_valid, limit), 0)
    if sizing is not None:
        n_valid = sizing.limit(state.sizing_state, n_valid, active, shape)
    last = jnp.take_along_axis(state.history, (state.seq_len - 1)[:, None], axis=1)
    window = jnp.concatenate([last, draft.tokens], axis=1)
    cache = state.cache if draft.cache is None else draft.cache
    # Window index i decides the token at history position seq_len + depth(i).
    rand = RowRandom(state.seeds, state.seq_len)
    depth = jnp.broadcast_to(jnp.arange(k + 1), (b, k + 1)) if shape is None else shape.depth
    logits, hidden, cache, draws, summary, tapped = verify_forward(
        model, params, window, cache, jnp.max(n_valid) + 1, shape, target_draws(spec, rand, draft, depth),
        getattr(drafter, "row_summary", None), tap_of(drafter),
    )
    n_accepted, next_token, path = accept(spec, rand, logits, draws, draft, n_valid, shape)
    kept = draft.tokens if path is None else jnp.take_along_axis(window, path[:, 1:], axis=1)

    tokens = _emitted(kept, n_accepted, next_token)
    count, finished = emit_count(
        tokens, n_accepted, state.stops, state.history, state.seq_len, state.prompt_len, spec.max_new_tokens
    )
    count = jnp.where(active, count, 0)
    history = state.history.at[rows, state.seq_len[:, None] + jnp.arange(k + 1)[None, :]].set(tokens, mode="drop")
    accept_lengths = state.accept_lengths.at[rows[:, 0], state.calls].set(
        jnp.where(active, count, state.accept_lengths[rows[:, 0], state.calls]), mode="drop"
    )
    new = state.replace(
        cache=cache.commit(jnp.where(active, n_accepted + 1, 0), path),
        history=history,
        seq_len=state.seq_len + count,
        done=state.done | (active & finished),
        calls=state.calls + active.astype(jnp.int32),
        accept_lengths=accept_lengths,
        sizing_state=None if sizing is None else sizing.observe(state.sizing_state, n_valid, n_accepted, path, shape),
    )
    chain = jnp.broadcast_to(jnp.arange(k + 1, dtype=jnp.int32), (b, k + 1))
    scored = jnp.concatenate([active[:, None], jnp.arange(k)[None, :] < n_valid[:, None]], axis=1)
    if draft.valid is not None:
        scored = scored.at[:, 1:].set(scored[:, 1:] & draft.valid)
    verified = Verified(n_accepted, next_token, chain if path is None else path, hidden, window, logits, scored,
                        summary, tapped)
    return new.replace(drafter_state=drafter.update(drafter_params, drafter_state, new.context(), verified))


def run_decode(
    model, drafter, spec: DecodeSpec, params, drafter_params, prompts, prompt_len, stops, seeds
) -> DecodeState:
    """model.start, then the loop until every row is done. prompts: [B, P] right-padded; prompt_len: [B] >= 1.

    The prompts are the decoder's prefix for a decoder-only model and the encoder's input for an
    encoder-decoder one (models/protocol.py); from here on the loop sees only decoder tokens.
    """
    b = prompts.shape[0]
    new_slots = spec.max_new_tokens + drafter.num_draft_tokens + 1
    constrain = spec.plan.constrain_cache if spec.plan is not None else None
    start = model.start(params, prompts, prompt_len, new_slots, constrain, **tap_of(drafter))
    start = start._replace(constrain=constrain)
    p = start.tokens.shape[1]
    history = jnp.zeros((b, p + new_slots), jnp.int32).at[:, :p].set(start.tokens)
    state = DecodeState(
        cache=start.cache,
        history=history,
        seq_len=start.lengths,
        prompt_len=start.lengths,
        done=jnp.zeros((b,), bool),
        calls=jnp.zeros((b,), jnp.int32),
        accept_lengths=jnp.zeros((b, spec.max_new_tokens), jnp.int32),
        seeds=seeds,
        stops=stops,
        source=start.source,
        drafter_state=drafter.init(drafter_params, prompts, prompt_len, new_slots, start),
        sizing_state=None if spec.sizing is None else spec.sizing.init(b),
    )
    if is_two_level(model):  # the model consumed the whole prompt; a step completes each row's unit
        step = lambda s: unit_step(model, spec, params, s)  # noqa: E731
    else:
        step = lambda s: decode_step(model, drafter, spec, params, drafter_params, s)  # noqa: E731
    return jax.lax.while_loop(lambda s: jnp.any(~s.done), step, state)


def is_two_level(model) -> bool:
    """A model decoded unit by unit with a step of its own (models/block_transformer.py), not by forward."""
    return getattr(model, "unit_len", None) is not None


def check_drafting(model, drafts: bool) -> None:
    """InputError where a method would draft for a two-level model, which has no multi-token forward."""
    if drafts and is_two_level(model):
        raise InputError(
            f"a {model.describe()['architecture']} decodes unit by unit with its own step: only the autoregressive "
            "method runs it"
        )


def decode(model, drafter, spec: DecodeSpec, params, drafter_params, prompts, prompt_len, stops, seeds):
    """The whole generate call: (history[B, H], start[B], seq_len[B], calls[B], accept_lengths[B, max_new],
    the drafter's final state).

    history[b, start[b]:seq_len[b]] are row b's new tokens.
    """
    TRACE_COUNTS["decode"] += 1
    state = run_decode(model, drafter, spec, params, drafter_params, prompts, prompt_len, stops, seeds)
    return state.history, state.prompt_len, state.seq_len, state.calls, state.accept_lengths, state.drafter_state


decode_jit = jax.jit(decode, static_argnames=("model", "drafter", "spec"))
