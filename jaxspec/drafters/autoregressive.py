"""Plain decoding: the drafter that proposes nothing (K = 0)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxspec.drafters.base import Context, Draft


@dataclasses.dataclass(frozen=True)
class Autoregressive:
    num_draft_tokens: int = 0

    def init(self, params, prompts, prompt_len, new_slots, start):
        return ()

    def propose(self, params, state, ctx: Context):
        b = ctx.seq_len.shape[0]
        return Draft(jnp.zeros((b, 0), jnp.int32), jnp.zeros((b,), jnp.int32), None), state

    def update(self, params, state, ctx: Context, verified):
        return state
