"""What a target forward costs per window width: the curve every speculative method's payoff depends on.

A speculative step scores a window of w tokens (the last token and the
drafts) in one forward. It pays only if that costs less than the tokens it
saves, so the ratio c(w) = t(w) / t(1) decides how long drafts should be.
On accelerators c(w) stays near 1 for small w (the step is bound by reading
the weights); on a CPU under XLA's defaults it does not.

`measure_forward_cost` times one jitted forward of w tokens after `context`
cached tokens, with the cache donated and fed back as the decode loop does
(K/V written in place), on whatever backend JAX runs. `cost_curve` does the
same once per model, dtype, backend and batch size and keeps the result on
disk ($JAXSPEC_CACHE/cost/); `draft_sizing` turns curves into the per-step
draft sizing every speculative method uses (jaxspec/draft_sizing.py).
`drafting_costs` times a tree drafter's step (propose, then update) against
the target's one-token forward, measured together and kept on disk alike:
small head calls are bound by latency, not by the bytes they read, so an
estimate from their weights misses most of their cost on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.widths import verify_widths
from jaxspec.draft_sizing import DraftSizing
from jaxspec.drafters.base import Context, Verified, tap_of
from jaxspec.reference_model import cache_root
from models import skinny_matmul

DEFAULT_WIDTHS = (1, 2, 3, 5, 9, 17)
DEFAULT_CONTEXT = 128  # cached tokens before the measured window
# How curves are measured; part of the disk cache's key, so a change measures them again. 3: PER_CALL forwards
# a timed call (2: one, so each paid the host's dispatch; 1: each width in its own block of calls).
MEASUREMENT = 3
# Forwards per timed call in the curves the sizing reads: a decoding loop dispatches once per generate call,
# not per step, and one forward a call priced the dispatch into every width alike, which flattened c(w)
# (Gemma 3 270M at batch 8 here: t(1) 83 ms one a call, 76 ms four a call, with the same t(2) - t(1)).
PER_CALL = 4


class CostCurve(NamedTuple):
    widths: tuple[int, ...]
    seconds: tuple[float, ...]  # median seconds of one forward at each width
    batch_size: int
    context: int

    def relative(self) -> tuple[float, ...]:
        """c(w) = t(w) / t(1); needs width 1 measured."""
        one = self.seconds[self.widths.index(1)]
        return tuple(s / one for s in self.seconds)

    def sizing_costs(self) -> dict[int, float]:
        """c(w) for the sizing rules, made non-decreasing in w: a forward over more tokens does all the
        work of one over fewer, so a wider forward that timed faster is noise, and trusting it would make
        drafts that are never accepted look as if they paid."""
        order = sorted(range(len(self.widths)), key=lambda i: self.widths[i])
        costs, running = {}, 0.0
        for i, c in zip(order, (self.relative()[i] for i in order)):
            running = max(running, c)
            costs[self.widths[i]] = running
        return costs


def measure_forward_cost(
    model, params, *, widths: Sequence[int] = DEFAULT_WIDTHS, batch_size: int = 1, context: int = DEFAULT_CONTEXT,
    repeats: int = 20, seed: int = 0, per_call: int = 1,
) -> CostCurve:
    """Median seconds of one forward over w new tokens, for each w, after `context` prompt tokens.

    The prompt is random ids (speed does not depend on values); for an
    encoder-decoder model it is the encoder's input and the decoder starts at
    its start token, as in decoding. Each width is compiled and run once
    untimed first, then the widths are timed in turns. With per_call = n > 1
    each timed call runs n forwards in one compiled loop (each reading the
    cache the one before wrote) and counts a n-th of its time: the host's
    dispatch, which a decoding loop pays once per call rather than per step,
    then drops out (on a GPU it is about as long as a small model's forward).
    """
    widths = tuple(sorted(set(widths)))
    rng = np.random.default_rng(seed)
    prompts = jnp.asarray(rng.integers(0, model.vocab_size, (batch_size, context + 1)), jnp.int32)
    prompt_len = jnp.full((batch_size,), context + 1, jnp.int32)
    start = model.start(params, prompts, prompt_len, max(widths))
    cache = start.cache

    def compiled(w):
        def one(params, tokens, cache):
            positions = cache.lengths[:, None] + jnp.arange(tokens.shape[1])[None, :]
            out = model.forward(params, tokens, positions, cache)
            # The loop reads the logits and keeps the cache; lengths are unchanged (nothing is committed).
            return out.logits, out.cache

        def forward(params, tokens, cache):
            first = one(params, tokens, cache)
            return jax.lax.fori_loop(1, per_call, lambda _, carry: one(params, tokens, carry[1]), first)

        return jax.jit(forward, donate_argnums=2)

    tokens = {w: jnp.asarray(rng.integers(0, model.vocab_size, (batch_size, w)), jnp.int32) for w in widths}
    forwards = {w: compiled(w) for w in widths}
    for w in widths:  # compiled and run once untimed
        logits, cache = forwards[w](params, tokens[w], cache)
        logits.block_until_ready()
    # Widths take turns, one timed call each per round: the machine's speed drifts (other tenants, clocks)
    # by tens of percent over a minute here, and timing each width in its own block of calls turned that
    # drift into differences between widths.
    times = {w: [] for w in widths}
    for _ in range(repeats):
        for w in widths:
            t0 = time.perf_counter()
            logits, cache = forwards[w](params, tokens[w], cache)
            logits.block_until_ready()
            times[w].append((time.perf_counter() - t0) / per_call)
    return CostCurve(widths, tuple(statistics.median(times[w]) for w in widths), batch_size, context)


def measure_drafting_seconds(
    model, params, drafter, drafter_params, *, batch_size: int = 1, context: int = DEFAULT_CONTEXT, repeats: int = 10,
) -> float:
    """Median seconds of one drafting step after `context` prompt tokens: `drafter`'s propose, then its update
    on a verified window of its K + 1 tokens (random ids and zero states: speed does not depend on values)."""
    rng = np.random.default_rng(0)
    k = drafter.num_draft_tokens
    prompts = jnp.asarray(rng.integers(0, model.vocab_size, (batch_size, context + 1)), jnp.int32)
    prompt_len = jnp.full((batch_size,), context + 1, jnp.int32)
    new = k + 1
    start = model.start(params, prompts, prompt_len, new, **tap_of(drafter))
    state = drafter.init(drafter_params, prompts, prompt_len, new, start)
    zeros = jnp.zeros((batch_size,), jnp.int32)
    ctx = Context(jnp.pad(prompts, ((0, 0), (0, new))), prompt_len, prompt_len, jnp.zeros((batch_size,), bool),
                  jnp.zeros((batch_size,), jnp.uint32), draft_limit=jnp.full((batch_size,), k, jnp.int32),
                  target_cache=start.cache)
    width = model.output_embedding(params).shape[-1]
    verified = Verified(
        zeros, zeros, jnp.broadcast_to(jnp.arange(k + 1, dtype=jnp.int32), (batch_size, k + 1)),
        jnp.zeros((batch_size, k + 1, width), jnp.float32), jnp.zeros((batch_size, k + 1), jnp.int32),
        jnp.zeros((batch_size, k + 1, model.vocab_size), jnp.float32), jnp.ones((batch_size, k + 1), bool),
        tapped=jnp.zeros((batch_size, k + 1, width), jnp.float32) if tap_of(drafter) else None,
    )

    summarize = getattr(drafter, "row_summary", None)

    @jax.jit
    def step(drafter_params, state):
        draft, state = drafter.propose(drafter_params, state, ctx)
        # The summary runs inside the verify, but it is the drafter's work: priced here, over all K + 1 rows.
        seen = verified if summarize is None else verified._replace(summary=tuple(summarize(verified.logits)))
        return draft.tokens, drafter.update(drafter_params, state, ctx, seen)

    tokens, state = step(drafter_params, state)
    tokens.block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens, state = step(drafter_params, state)
        tokens.block_until_ready()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def curve_key(model, params, *, batch_size: int, widths: Sequence[int], context: int) -> dict:
    """Everything a forward's speed depends on besides the weights' values: the model (architecture and
    config), the parameters' dtypes, the backend and its devices, how few-row products run, the batch,
    the widths and jax itself."""
    device = jax.devices()[0]
    return dict(
        model=repr(model),
        param_dtypes=sorted({str(x.dtype) for x in jax.tree_util.tree_leaves(params)}),
        backend=jax.default_backend(),
        device_kind=device.device_kind,
        device_count=jax.device_count(),
        jax=jax.__version__,
        formulation=skinny_matmul.formulation(),
        measurement=MEASUREMENT,
        batch_size=batch_size,
        widths=sorted(set(widths)),
        context=context,
    )


def curve_path(key: dict, cache_dir: Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return (cache_dir or cache_root() / "cost") / f"{digest}.json"


def _stored(path: Path, key: dict) -> dict | None:
    """The record measured for `key`, or None (none yet, or a hash collision: another key's)."""
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return stored if stored["key"] == key else None


def _store(path: Path, record: dict) -> None:
    """Writes a measurement atomically: a temporary name, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def cost_curve(
    model, params, *, batch_size: int, widths: Sequence[int], context: int = DEFAULT_CONTEXT, repeats: int = 10,
    cache_dir: Path | None = None, fresh: bool = False, progress: Callable[[str], None] = lambda msg: None,
) -> CostCurve:
    """The forward-cost curve, measured on first use (or when `fresh`) and read from disk after (keyed by
    `curve_key`)."""
    key = curve_key(model, params, batch_size=batch_size, widths=widths, context=context)
    path = curve_path(key, cache_dir)
    stored = None if fresh else _stored(path, key)
    if stored is not None:
        return CostCurve(tuple(stored["widths"]), tuple(stored["seconds"]), batch_size, context)
    progress(f"measuring the forward cost at widths {key['widths']}, batch {batch_size} (once; cached in {path.parent})")
    curve = measure_forward_cost(model, params, widths=widths, batch_size=batch_size, context=context, repeats=repeats,
                                 per_call=PER_CALL)
    _store(path, dict(key=key, widths=list(curve.widths), seconds=list(curve.seconds)))
    return curve


def drafting_costs(
    model, params, drafters: dict, *, batch_size: int, context: int = DEFAULT_CONTEXT, repeats: int = 10,
    cache_dir: Path | None = None, fresh: bool = False, progress: Callable[[str], None] = lambda msg: None,
) -> dict:
    """{name: a drafting step's seconds over the target's one-token forward's} for drafters {name: (drafter,
    params)} at this batch size: each timed on first use (or when `fresh`), beside one timing of the
    target's forward, and read from disk after (keyed by `curve_key` and the drafter, whose repr holds its
    static config and tree)."""
    base = curve_key(model, params, batch_size=batch_size, widths=[1], context=context)
    out, forward_seconds = {}, None
    for name, (drafter, drafter_params) in drafters.items():
        key = dict(base, drafter=repr(drafter),
                   drafter_param_dtypes=sorted({str(x.dtype) for x in jax.tree_util.tree_leaves(drafter_params)}))
        path = curve_path(key, cache_dir)
        stored = None if fresh else _stored(path, key)
        if stored is not None:
            out[name] = stored["relative"]
            continue
        progress(f"measuring a {drafter.num_draft_tokens}-node drafting step, batch {batch_size} (once; cached in "
                 f"{path.parent})")
        if forward_seconds is None:
            forward_seconds = measure_forward_cost(model, params, widths=(1,), batch_size=batch_size, context=context,
                                                   repeats=repeats, per_call=PER_CALL).seconds[0]
        seconds = measure_drafting_seconds(model, params, drafter, drafter_params, batch_size=batch_size,
                                           context=context, repeats=repeats)
        out[name] = seconds / forward_seconds
        _store(path, dict(key=key, seconds=seconds, forward_seconds=forward_seconds, relative=out[name]))
    return out


def sizing_from_curves(target: CostCurve, num_draft_tokens: int, draft: CostCurve | None = None) -> DraftSizing:
    """The cost of verifying k drafts is the target's cost at the width the loop compiles for k + 1
    (the smallest of verify_widths(K) at or above it); a draft model's token costs its one-token forward."""
    compiled = verify_widths(num_draft_tokens)
    relative = target.sizing_costs()
    missing = [w for w in compiled if w not in relative]
    if missing:
        raise ValueError(f"the cost curve lacks widths {missing} that a {num_draft_tokens}-draft loop compiles")
    verify = tuple(relative[min(w for w in compiled if w >= k + 1)] for k in range(num_draft_tokens + 1))
    one = target.seconds[target.widths.index(1)]
    draft_cost = 0.0 if draft is None else draft.seconds[draft.widths.index(1)] / one
    return DraftSizing(verify, draft_cost)


def draft_sizing(
    model, params, *, batch_size: int, num_draft_tokens: int, draft_model=None, draft_params=None,
    progress: Callable[[str], None] = lambda msg: None,
) -> DraftSizing:
    """Sizing for a K-draft method on this model and batch, from the cached (or freshly measured) curves."""
    # The default widths are measured whatever K is, so one measurement (and `jaxspec profile`'s) serves all.
    widths = sorted(set(DEFAULT_WIDTHS) | set(verify_widths(num_draft_tokens)))
    target = cost_curve(model, params, batch_size=batch_size, widths=widths, progress=progress)
    draft = None
    if draft_model is not None:
        draft = cost_curve(draft_model, draft_params, batch_size=batch_size, widths=DEFAULT_WIDTHS, progress=progress)
    return sizing_from_curves(target, num_draft_tokens, draft)
