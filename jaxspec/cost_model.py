"""What a target forward costs per window width: the curve every speculative method's payoff depends on.

A speculative step scores a window of w tokens (the last token and the
drafts) in one forward. It pays only if that costs less than the tokens it
saves, so the ratio c(w) = t(w) / t(1) decides how long drafts should be.
On accelerators c(w) stays near 1 for small w (the step is bound by reading
the weights); on a CPU under XLA's defaults it does not.

`measure_forward_cost` times one jitted forward of w tokens after `context`
cached tokens, with the cache donated and fed back as the decode loop does
(K/V written in place), on whatever backend JAX runs.
"""

from __future__ import annotations

import statistics
import time
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_WIDTHS = (1, 2, 3, 5, 9, 17)


class CostCurve(NamedTuple):
    widths: tuple[int, ...]
    seconds: tuple[float, ...]  # median seconds of one forward at each width
    batch_size: int
    context: int

    def relative(self) -> tuple[float, ...]:
        """c(w) = t(w) / t(1); needs width 1 measured."""
        one = self.seconds[self.widths.index(1)]
        return tuple(s / one for s in self.seconds)


def measure_forward_cost(
    model, params, *, widths: Sequence[int] = DEFAULT_WIDTHS, batch_size: int = 1, context: int = 128,
    repeats: int = 20, seed: int = 0,
) -> CostCurve:
    """Median seconds of one forward over w new tokens, for each w, after `context` prompt tokens.

    The prompt is random ids (speed does not depend on values); for an
    encoder-decoder model it is the encoder's input and the decoder starts at
    its start token, as in decoding. Each width is compiled and run once
    untimed first.
    """
    widths = tuple(sorted(set(widths)))
    rng = np.random.default_rng(seed)
    prompts = jnp.asarray(rng.integers(0, model.vocab_size, (batch_size, context + 1)), jnp.int32)
    prompt_len = jnp.full((batch_size,), context + 1, jnp.int32)
    start = model.start(params, prompts, prompt_len, max(widths))
    cache = start.cache

    seconds = []
    for w in widths:
        tokens = jnp.asarray(rng.integers(0, model.vocab_size, (batch_size, w)), jnp.int32)

        def forward(params, tokens, cache):
            positions = cache.lengths[:, None] + jnp.arange(tokens.shape[1])[None, :]
            out = model.forward(params, tokens, positions, cache)
            # The loop reads the logits and keeps the cache; lengths are unchanged (nothing is committed).
            return out.logits, out.cache

        forward = jax.jit(forward, donate_argnums=2)
        logits, cache = forward(params, tokens, cache)
        logits.block_until_ready()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            logits, cache = forward(params, tokens, cache)
            logits.block_until_ready()
            times.append(time.perf_counter() - t0)
        seconds.append(statistics.median(times))
    return CostCurve(widths, tuple(seconds), batch_size, context)
