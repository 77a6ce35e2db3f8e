"""generate() and score(): the host side of decoding — validation, bucketing, results.

Prompt lengths are padded up to a bucket (a power of two or three quarters of one, at least 16) so a new
prompt of a known bucket reuses the compiled program. Everything after that is
one call of the jitted decode loop.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import row_rng, vocab_reduce
from jaxspec.decode_loop import DecodeSpec, check_drafting, decode_jit
from jaxspec.draft_sizing import DraftSizing
from jaxspec.drafters import Autoregressive
from jaxspec.errors import InputError
from jaxspec.sampling import SamplingConfig
from jaxspec.sharding import ShardingPlan
from jaxspec.stopping import stop_table

MIN_BUCKET = 16


@dataclasses.dataclass
class Generation:
    prompt_ids: list[int]
    output_ids: list[int]  # new tokens, up to and including the first stop token
    target_calls: int
    accept_lengths: list[int]  # tokens emitted per target call, bonus included
    wall_time: float  # seconds for the whole batch this prompt ran in

    @property
    def new_tokens(self) -> int:
        return len(self.output_ids)


def bucket(length: int) -> int:
    """The padded width for `length`: the next of 16, 24, 32, 48, 64, 96, ... (powers of two and
    three quarters of them). Padding is prefilled like prompt tokens, so powers of two alone made a
    prompt just past one (a 518-token prompt padded to 1024) cost up to twice its prefill; with the
    midpoints the most is 1.5x, for at most two compiled programs per doubling."""
    power = 1 << (max(length, 1) - 1).bit_length()
    return max(MIN_BUCKET, power * 3 // 4 if length <= power * 3 // 4 else power)


def _check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> None:
    if not prompts:
        raise InputError("no prompts given")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise InputError(f"prompt {i} is empty")
        bad = [t for t in p if not 0 <= int(t) < vocab_size]
        if bad:
            raise InputError(f"prompt {i} has token id {bad[0]} outside the vocabulary [0, {vocab_size})")


def _pad(prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = bucket(max(len(p) for p in prompts))
    tokens = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = p
    return tokens, np.array([len(p) for p in prompts], np.int32)


def row_seeds(seed: int | Sequence[int], batch: int) -> jax.Array:
    """[B] uint32 row seeds: `seed` per prompt, or seed, seed + 1, ... from one int."""
    seeds = [seed + i for i in range(batch)] if isinstance(seed, (int, np.integer)) else list(seed)
    if len(seeds) != batch:
        raise InputError(f"{len(seeds)} seeds for {batch} prompts")
    for s in seeds:
        if int(s) != s or not 0 <= s <= row_rng.MAX_SEED:
            raise InputError(f"seed must be an integer in [0, 2^32 - 1], got {s}")
    return jnp.asarray(np.asarray(seeds, np.uint32))


def check_request(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, max_positions: int | None) -> None:
    """The prompts' ids, the budget and whether prompt and output fit the model's positions: InputError
    otherwise. generate() checks it; a caller about to do slow work first (measure a cost curve) can too."""
    _check_prompts(prompts, model.vocab_size)
    if int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
        raise InputError(f"max-new-tokens must be a positive integer, got {max_new_tokens}")
    longest = max(len(p) for p in prompts)
    # A decoder-only model's positions hold prompt and output together; an encoder-decoder's hold each apart.
    if model.is_encoder_decoder:
        needed, what = max(longest, 1 + max_new_tokens), f"input of {longest} tokens or {max_new_tokens} new tokens"
    else:
        needed, what = longest + max_new_tokens, f"prompt of {longest} tokens + {max_new_tokens} new tokens"
    if max_positions is not None and needed > max_positions:
        raise InputError(f"{what} exceeds the model's {max_positions} positions")


def generate(
    model,
    params,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    seed: int | Sequence[int] = 0,
    stop_ids: Sequence[int] = (),
    stop_sequences: Sequence[Sequence[int]] = (),
    drafter=Autoregressive(),
    drafter_params=None,
    max_positions: int | None = None,
    plan: ShardingPlan | None = None,
    sizing: DraftSizing | None = None,
    drafter_state_to: Callable[[Any], None] | None = None,
) -> list[Generation]:
    """Decodes a batch of ragged prompts in one compiled program.

    `seed` is one seed per prompt, or one int s standing for s, s + 1, ... in
    prompt order. A row's random draws come from its own seed and positions
    only (jaxspec/row_rng.py), so its output never depends on the other rows:
    it equals that prompt decoded alone with the same seed.

    With a sharding plan, params should already be placed (plan.shard_params);
    prompts are sharded over the batch axes and the cache layout is pinned.

    With `sizing` (jaxspec.cost_model.draft_sizing builds one from the measured
    cost curve), each step verifies only the drafts expected to pay; greedy
    output and the output distribution stay those of plain decoding (a draft
    model's sampled draws then depend on the batch through the common cap).

    A row stops after a token of `stop_ids` or once its new tokens end with one of `stop_sequences`
    (kept in the output, like a stop token).

    `drafter_state_to` receives the drafter's state at the end of the call
    (token recycling's successor table, which TokenRecycling.carry turns into
    the next call's params).
    """
    if sizing is not None and sizing.max_drafts != drafter.num_draft_tokens:
        raise InputError(
            f"the sizing's cost table covers {sizing.max_drafts} drafts but the drafter proposes {drafter.num_draft_tokens}"
        )
    check_drafting(model, drafter.num_draft_tokens > 0 or sizing is not None)
    seeds = row_seeds(seed, len(prompts))
    check_request(model, prompts, max_new_tokens, max_positions)
    if max_positions is not None and drafter.num_draft_tokens >= max_positions:
        raise InputError(
            f"the drafter verifies {drafter.num_draft_tokens} tokens a step (a tree's nodes), more than the model's "
            f"{max_positions} positions hold"
        )
    padded, prompt_lengths = _pad(prompts)
    tokens, lengths = jnp.asarray(padded), jnp.asarray(prompt_lengths)
    if plan is not None:
        tokens = jax.device_put(tokens, plan.batch_sharding(tokens.shape))
        lengths = jax.device_put(lengths, plan.batch_sharding(lengths.shape))
        seeds = jax.device_put(seeds, plan.batch_sharding(seeds.shape))
    spec = DecodeSpec(int(max_new_tokens), sampling, plan, sizing)
    stops = stop_table(stop_ids, stop_sequences, bucket)
    start = time.perf_counter()
    history, starts, seq_len, calls, accepts, drafter_state = jax.block_until_ready(
        decode_jit(
            model,
            drafter,
            spec,
            params,
            drafter_params,
            tokens,
            lengths,
            jnp.asarray(stops),
            seeds,
        )
    )
    wall = time.perf_counter() - start
    if drafter_state_to is not None:
        drafter_state_to(drafter_state)
    history, starts, seq_len, calls, accepts = map(np.asarray, (history, starts, seq_len, calls, accepts))
    return [
        Generation(
            prompt_ids=list(map(int, p)),
            output_ids=history[i, starts[i] : seq_len[i]].tolist(),
            target_calls=int(calls[i]),
            accept_lengths=accepts[i, : calls[i]].tolist(),
            wall_time=wall,
        )
        for i, p in enumerate(prompts)
    ]


@jax.jit(static_argnums=0)
def _token_logprobs(model, params, tokens):
    logits = model.sequence_logits(params, tokens)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], axis=2)[..., 0], vocab_reduce.argmax(logits)


@jax.jit(static_argnums=0)
def _target_logprobs(model, params, source, source_len, targets):
    """Teacher-forced: the decoder reads [start] + target and predicts target."""
    start = jnp.full((targets.shape[0], 1), model.config.decoder_start_token_id, jnp.int32)
    logits = model.sequence_logits(params, jnp.concatenate([start, targets[:, :-1]], axis=1), source, source_len)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, targets[:, :, None], axis=2)[..., 0], vocab_reduce.argmax(logits)


def score(model, params, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]] | None = None) -> list[dict]:
    """Per prompt of a decoder-only model: logprobs[i] = log p(token i | tokens before it) (None for i = 0),
    argmax[i] = the most likely token after position i.

    An encoder-decoder model scores a target per prompt (the encoder input) instead: logprobs[i] =
    log p(target i | prompt, target before i), argmax[i] = the most likely token at target position i.
    """
    _check_prompts(prompts, model.vocab_size)
    if not model.is_encoder_decoder:
        if targets is not None:
            raise InputError("targets are for encoder-decoder models; a decoder-only model scores its prompts")
        tokens, lengths = _pad(prompts)
        logprobs, argmax = map(np.asarray, _token_logprobs(model, params, jnp.asarray(tokens)))
        return [
            {
                "prompt_ids": list(map(int, p)),
                "logprobs": [None] + logprobs[i, : lengths[i] - 1].tolist(),
                "argmax": argmax[i, : lengths[i]].tolist(),
            }
            for i, p in enumerate(prompts)
        ]
    if targets is None or len(targets) != len(prompts):
        got = 0 if targets is None else len(targets)
        raise InputError(f"an encoder-decoder model scores one target per prompt: {len(prompts)} prompts, {got} targets")
    _check_prompts(targets, model.vocab_size)
    source, source_len = _pad(prompts)
    padded, target_len = _pad(targets)
    logprobs, argmax = map(
        np.asarray, _target_logprobs(model, params, jnp.asarray(source), jnp.asarray(source_len), jnp.asarray(padded))
    )
    return [
        {
            "prompt_ids": list(map(int, p)),
            "target_ids": list(map(int, t)),
            "logprobs": logprobs[i, : target_len[i]].tolist(),
            "argmax": argmax[i, : target_len[i]].tolist(),
        }
        for i, (p, t) in enumerate(zip(prompts, targets))
    ]
