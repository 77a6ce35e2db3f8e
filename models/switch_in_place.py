"""lax.switch for work that updates large carried buffers: one branch runs, and the buffers stay in place.

A conditional's outputs are fresh buffers, so a branch that updates every
layer's cache makes XLA copy each of them out of the taken branch (on a
decoding step, the whole cache every step). A while loop updates what it
carries in place. So each branch becomes a while loop of zero or one
trips, run in turn, and only the chosen one takes its trip.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp


def switch_in_place(index, branches: Sequence[Callable[[Any], Any]], carried):
    """branches[index](carried) for a traced int32 index; `carried` unchanged when index is out of range.
    Each branch returns a pytree of carried's structure, shapes and dtypes."""
    state = (carried, jnp.asarray(index, jnp.int32))
    for i, branch in enumerate(branches):
        # The trip sets the index to -1, so no later loop runs.
        state = jax.lax.while_loop(lambda s, i=i: s[1] == i, lambda s, f=branch: (f(s[0]), jnp.int32(-1)), state)
    return state[0]
