"""What the engine may call on a model, besides `forward`, and how a decode starts.

Every model object (decoder-only or encoder-decoder) offers:

    vocab_size                                   int
    is_encoder_decoder                           bool
    init_cache(batch, max_len, ...)              an empty cache: .lengths [B], .max_len, .commit(n, path),
                                                 .with_lengths(lengths)
    forward(params, tokens, positions, cache, window_mask=None) -> ModelOutput
                                                 decoder tokens in, logits out, K/V written, lengths kept
    forward(..., tap=E), start(..., tap=E)       (decoder-only LMs) also the hidden state after layer E,
                                                 through the final norm, in ModelOutput.tapped / Start.tapped:
                                                 what the first E layers alone would output (an early-exit
                                                 drafter's input, models/early_exit.py)
    start(params, prompts, prompt_len, new_slots, constrain=None) -> Start
    for_checkpoint(tensor_names) -> model        the model that runs a checkpoint holding these (Hugging Face)
                                                 tensors, where the config leaves a choice open (a T5's tied head)
    output_embedding(params) -> [V, D]           the rows the final hidden state is scored against: draft
                                                 heads project through them (models/medusa.py)

A two-level model (models/block_transformer.py) has no `forward` for the loop:
it owns its step and says so with `unit_len`, the most tokens one unit (a
block) holds. Its `start` consumes the whole prompt, and its cache keeps each
row's next-token logits in `cache.logits`:

    unit_len                                     int
    step_in_unit(params, tokens[B], cache, rows[B]) -> cache
                                                 rows take their next token into their unit
    unit_full(cache) -> [B] bool                 the row's unit waits to be closed
    close_units(params, cache, rows[B]) -> cache the outer level for rows whose unit is full
    close_quorum (optional, default 1.0)         the share of live rows whose units must be full
                                                 before the engine closes them

`start` turns the user's prompts into the state the decode loop begins from.
For a decoder-only model the prompt is the decoder's own prefix: it is
prefilled into the cache (all but each row's last token, which the first step
feeds). For an encoder-decoder model the prompt is the encoder's input: the
encoder runs once, the cross-attention K/V of every decoder layer are computed
once into the cache, and the decoder begins from its start token alone. Either
way the loop only ever sees decoder tokens, so every drafter and acceptance
rule works on both kinds unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class ModelOutput(NamedTuple):
    logits: jax.Array  # [B, T, V] float32
    hidden: jax.Array  # [B, T, D], after the final norm
    cache: Any
    tapped: jax.Array | None = None  # [B, T, D] the hidden state after the `tap` layer, normed; None untapped


class Start(NamedTuple):
    cache: Any  # committed: lengths == decoder lengths - 1
    tokens: jax.Array  # [B, P] the decoder's prompt, right-padded
    lengths: jax.Array  # [B] int32 >= 1
    # The encoder input (tokens [B, S], lengths [B]) of an encoder-decoder model, for drafters that copy
    # from it (prompt lookup); None for a decoder-only model, whose prompt is already in `tokens`.
    source: tuple[jax.Array, jax.Array] | None = None
    # [B, P, D] the final hidden state at each prefilled decoder position (a head drafter's first input);
    # None where nothing was prefilled (an encoder-decoder's decoder starts from its start token alone).
    hidden: jax.Array | None = None
    # What pinned the target's cache layout (a sharding constraint on a mesh), for drafters that start caches
    # of their own (a draft model's) to pin theirs alike; None off a mesh. Set by the engine, not the model.
    constrain: Callable | None = None
    tapped: jax.Array | None = None  # [B, P, D] the prefill's ModelOutput.tapped where a tap was asked for


def decoder_only_start(
    model, params, prompts: jax.Array, prompt_len: jax.Array, new_slots: int, constrain: Callable | None = None,
    tap: int | None = None,
) -> Start:
    """Prefills prompts[b, :prompt_len[b] - 1] into a cache of prompts.shape[1] + new_slots slots; with `tap`,
    keeps the hidden state after that layer too (Start.tapped)."""
    b, p = prompts.shape
    cache = model.init_cache(b, p + new_slots)
    if constrain is not None:
        cache = constrain(cache)
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    out = model.forward(params, prompts, positions, cache, **({} if tap is None else {"tap": tap}))
    return Start(out.cache.commit(prompt_len - 1), prompts, prompt_len, hidden=out.hidden, tapped=out.tapped)
