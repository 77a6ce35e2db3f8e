"""Acceptance rules: how many drafted tokens each row keeps, and the token that follows them.

Every rule takes the step's per-row randomness (`row_rng.RowRandom`: each
row's seed and the position its window starts at), the target distributions
p[B, K+1, V] (from `sampling.target_distribution`, so greedy is a point mass),
the drafted tokens x[B, K] and the number of valid drafts per row
n_draft[B] <= K, and returns (n_accepted[B], next_token[B]). The row then
emits x[:n_accepted] + [next_token].

Under greedy p is one-hot, and both rules reduce to "accept while the draft
equals the target's argmax; the argmax at the first mismatch is the bonus".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxspec import row_rng
from jaxspec.row_rng import RowRandom


def _first_false(ok: jax.Array, n_draft: jax.Array) -> jax.Array:
    """Length of the leading run of True in ok[B, K], capped at n_draft[B]."""
    k = ok.shape[1]
    ok = ok & (jnp.arange(k)[None, :] < n_draft[:, None])
    return jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=1), axis=1)


def accept_point_mass(rand: RowRandom, p: jax.Array | None, x: jax.Array, n_draft: jax.Array, greedy: bool = False,
                      draws: jax.Array | None = None):
    """Drafts without a distribution (prompt lookup, token recycling, greedy heads).

    q is one-hot at x, so the ratio test accepts x with probability p(x) and on
    rejection draws from p with x removed. Equivalently, and cheaper: draw
    y_i ~ p_i at every position, accept while y_i == x_i, and emit y at the
    first mismatch. Each emitted token is then exactly a draw from p given its
    prefix. (A fresh draw at the mismatch would be biased against x.) y_i is the
    row's TARGET draw at its position, the very draw plain sampling makes there.
    `draws` [B, K+1] are those draws when already made (under greedy, the
    verify's argmax): p is then not read.
    """
    y = draws if draws is not None else row_rng.categorical(rand.keys(row_rng.TARGET, p.shape[1]), p, greedy)
    n = _first_false(y[:, :-1] == x, n_draft)
    return n, jnp.take_along_axis(y, n[:, None], axis=1)[:, 0]


def accept_ratio(rand: RowRandom, p: jax.Array, q: jax.Array, x: jax.Array, n_draft: jax.Array, greedy: bool = False):
    """Speculative sampling (Leviathan et al. 2023; Chen et al. 2023) for drafts x_i ~ q_i.

    Accept x_i with probability min(1, p_i(x_i) / q_i(x_i)); at the first
    rejection draw from norm(max(0, p_i - q_i)); if every valid draft passes,
    draw the bonus token from p at the next position.
    """
    b, k1, v = p.shape
    k = k1 - 1
    px = jnp.take_along_axis(p[:, :k], x[..., None], axis=2)[..., 0]
    qx = jnp.take_along_axis(q, x[..., None], axis=2)[..., 0]
    u = row_rng.uniform(rand.keys(row_rng.ACCEPT, k))
    n = _first_false(u * qx < px, n_draft)
    p_n = jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0]
    q_pad = jnp.concatenate([q, jnp.zeros((b, 1, v), q.dtype)], axis=1)
    q_n = jnp.take_along_axis(q_pad, n[:, None, None], axis=1)[:, 0]
    rejected = (n < n_draft)[:, None]
    residual = jnp.maximum(p_n - q_n, 0.0)
    # After a real rejection p(x) < q(x), so the residual has positive mass.
    residual = jnp.where(jnp.sum(residual, axis=-1, keepdims=True) > 0, residual, p_n)
    return n, row_rng.categorical(rand.keys_at(row_rng.TARGET, n), jnp.where(rejected, residual, p_n), greedy)
