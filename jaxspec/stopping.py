"""When a row stops: stop tokens and stop sequences in one traced table, and how many of a step's tokens a row
keeps (stops and the budget).

A table row is one stop sequence, right-aligned in M columns; the columns
before it hold NO_TOKEN (no condition), so a stop token is the sequence of
length 1. Rows that pad the table to its bucket hold NEVER and match nothing.
A stop sequence matches when the row's new tokens end with it: it never
reaches back into the prompt. The table is traced, not static, so another
model's stops (or another user's) reuse the compiled program of its bucket.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.errors import InputError

NO_TOKEN = -1  # left padding of a shorter sequence: any token, or none
NEVER = -2  # a padding row
_PROMPT = -3  # what positions before the new tokens read as: equal to no stop token


def stop_table(stop_ids: Sequence[int], stop_sequences: Sequence[Sequence[int]], bucket) -> np.ndarray:
    """[S, M] int32 for the loop: stop tokens and stop sequences, S and M rounded up by `bucket`."""
    if any(len(s) == 0 for s in stop_sequences):
        raise InputError("a stop sequence is empty")
    seqs = sorted({(int(s),) for s in stop_ids} | {tuple(int(t) for t in s) for s in stop_sequences})
    width = bucket(max((len(s) for s in seqs), default=1)) if any(len(s) > 1 for s in seqs) else 1
    table = np.full((bucket(len(seqs)), width), NEVER, np.int32)
    for i, s in enumerate(seqs):
        table[i] = [NO_TOKEN] * (width - len(s)) + list(s)
    return table


def stop_hits(tokens: jax.Array, stops: jax.Array, history: jax.Array, seq_len: jax.Array, prompt_len: jax.Array) -> jax.Array:
    """[B, T] bool: a stop sequence ends at window token i, the step's tokens [B, T] standing at history
    positions seq_len + i after the row's history[:, :seq_len]."""
    b, t = tokens.shape
    m = stops.shape[1]
    if m == 1:  # stop tokens only: no history needed
        return jnp.any(tokens[:, :, None] == stops[None, None, :, 0], axis=2)
    back = seq_len[:, None] + jnp.arange(1 - m, 0)[None, :]  # [B, M - 1]: the positions before the window
    tail = jnp.take_along_axis(history, jnp.maximum(back, 0), axis=1)
    tail = jnp.where(back >= prompt_len[:, None], tail, _PROMPT)
    ext = jnp.concatenate([tail, tokens], axis=1)
    windows = ext[:, jnp.arange(t)[:, None] + jnp.arange(m)[None, :]]  # [B, T, M]: the M tokens ending at i
    match = (stops[None, None] == NO_TOKEN) | (windows[:, :, None, :] == stops[None, None])
    return jnp.any(jnp.all(match, axis=3), axis=2)


def emit_count(tokens, n_accepted, stops, history, seq_len, prompt_len, max_new_tokens: int):
    """How many of the step's tokens [B, T] each row keeps (the n_accepted + 1 emitted, cut after a stop
    and at the budget), and whether the row is done."""
    count = n_accepted + 1
    idx = jnp.arange(tokens.shape[1])[None, :]
    hit_stop = stop_hits(tokens, stops, history, seq_len, prompt_len) & (idx < count[:, None])
    has_stop = jnp.any(hit_stop, axis=1)
    count = jnp.where(has_stop, jnp.argmax(hit_stop, axis=1) + 1, count)
    budget = max_new_tokens - (seq_len - prompt_len)
    finished = has_stop & (count <= budget)
    count = jnp.minimum(count, budget)
    return count, finished | (count >= budget)
