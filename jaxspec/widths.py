"""The window widths a decode program compiles, and running work over only the rows a step scored.

A step verifies as many window tokens as some row drafted (jaxspec/decode_loop.py),
so work done per window row (the target's forward, its argmax, token recycling's
top-k of the logits) should run over those rows only. Shapes are static, so each
compiled width w gets its own copy of the work, and the smallest w covering the
rows needed runs, through models/switch_in_place.py: XLA copied every layer's
cache out of a `lax.switch` branch each step (docs/architecture.md, "How a step
runs only the width it needs").
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from models.switch_in_place import switch_in_place


def verify_widths(k: int) -> tuple[int, ...]:
    """The window widths compiled for a K-token drafter: 1, 2, 3, 5, 9, ... and K + 1."""
    return tuple(sorted({w for w in (1, 2, 3, 5, 9, 17, 33) if w < k + 1} | {k + 1}))


def over_needed_rows(run: Callable[[int, Any], tuple[tuple, Any]], widths: tuple[int, ...], needed, carried):
    """run(w, carried) -> (rows, carried), `rows` a tuple of arrays with w entries on axis 1, for the smallest
    of `widths` >= needed (a traced scalar; at most widths[-1]). Returns (rows zero-padded to widths[-1],
    carried)."""
    if len(widths) == 1:
        return run(widths[0], carried)
    shapes = jax.eval_shape(lambda c: run(widths[-1], c)[0], carried)
    buffers = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)
    put = lambda buf, x: jax.lax.dynamic_update_slice(buf, x, (0,) * buf.ndim)  # noqa: E731

    def branch(w):
        def once(state):
            rows, carried = run(w, state[1])
            return tuple(put(buf, x) for buf, x in zip(state[0], rows)), carried

        return once

    index = jnp.searchsorted(jnp.asarray(widths), needed)
    return switch_in_place(index, [branch(w) for w in widths], (buffers, carried))
