"""One outer step of a two-level model (Block Transformer, HAT): every active row completes its current unit.

A two-level model consumes tokens in units (models/block_transformer.py: a
block of L tokens; models/hat.py: a word of bytes) and owns its step in two
halves: `step_in_unit` takes each row's new token into its unit,
`close_units` runs the outer level for rows whose unit is full and opens the
next one. Between them the model's cache
holds each row's next-token logits (`cache.logits`), so the engine samples,
stops and records exactly as for any model:

    inner loop, while a row's unit is open (at most unit_len times):
                                          draw each row's next token from cache.logits
                                          (the TARGET draw at its position: jaxspec/row_rng.py),
                                          emit it (stops, budget: jaxspec/stopping.py), step_in_unit
    then once:                            close_units for the rows whose unit is full

The inner loop ends early once `model.close_quorum` (default 1: all) of the
live rows wait; rows whose unit is still open go on drawing in the next step.

A row whose unit is full waits (its state untouched) while the others draw,
so the outer level runs once per outer step for every row that closes: a
Block Transformer's rows close their blocks together once the first partial
block is done (waiting for all keeps them in step); a HAT's rows finish words
of different lengths, so it closes once half of them wait.
The step fits the loop's invariant (jaxspec/decode_loop.py) with its own cache
meaning: everything emitted is already consumed, and each row's emitted
count is one target "call" in the statistics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxspec import row_rng
from jaxspec.row_rng import RowRandom
from jaxspec.sampling import target_distribution
from jaxspec.stopping import emit_count


def unit_step(model, spec, params, state):
    """DecodeState → DecodeState after one unit per active row (jaxspec/decode_loop.py's DecodeState)."""
    b = state.seq_len.shape[0]
    active = ~state.done
    rows = jnp.arange(b)

    def going(cache, done):
        return active & ~done & ~model.unit_full(cache)

    def inner(carry):
        i, cache, history, seq_len, done, emitted = carry
        going_now = going(cache, done)
        p = target_distribution(cache.logits[:, None, :], spec.sampling)[:, 0]
        token = row_rng.categorical(RowRandom(state.seeds, seq_len).keys_at(row_rng.TARGET, 0), p, spec.sampling.greedy)
        _, finished = emit_count(
            token[:, None], jnp.zeros_like(seq_len), state.stops, history, seq_len, state.prompt_len, spec.max_new_tokens
        )
        history = history.at[rows, jnp.where(going_now, seq_len, history.shape[1])].set(token, mode="drop")
        seq_len = seq_len + going_now.astype(jnp.int32)
        done = done | (going_now & finished)
        cache = model.step_in_unit(params, token, cache, going_now)
        return i + 1, cache, history, seq_len, done, emitted + going_now.astype(jnp.int32)

    quorum = getattr(model, "close_quorum", 1.0)

    def more(carry):
        i, cache, _, _, done, _ = carry
        live = active & ~done
        waiting = jnp.sum(live & model.unit_full(cache))
        return (i < model.unit_len) & jnp.any(going(cache, done)) & (waiting < quorum * jnp.sum(live))

    carry = (0, state.cache, state.history, state.seq_len, state.done, jnp.zeros((b,), jnp.int32))
    _, cache, history, seq_len, done, emitted = jax.lax.while_loop(more, inner, carry)
    cache = model.close_units(params, cache, ~done & model.unit_full(cache))
    accept_lengths = state.accept_lengths.at[rows, jnp.where(active, state.calls, spec.max_new_tokens)].set(
        emitted, mode="drop"
    )
    return state.replace(
        cache=cache,
        history=history,
        seq_len=seq_len,
        done=done,
        calls=state.calls + active.astype(jnp.int32),
        accept_lengths=accept_lengths,
    )
