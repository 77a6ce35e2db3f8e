"""The sampler every method draws with: `row_rng.categorical` by two-level inverse CDF.

Statistics run `_inverse_cdf` vmapped over keys with one distribution held
fixed, so a million draws cost one pass over the vocabulary plus two short
searches each.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxspec import row_rng


def _draws(p: np.ndarray, n: int, seed: int = 0, chunk: int = 50_000) -> np.ndarray:
    keys = jax.random.split(jax.random.key(seed), n)
    draw = jax.jit(jax.vmap(row_rng._inverse_cdf, in_axes=(0, None)))
    p = jnp.asarray(p, jnp.float32)
    return np.concatenate([np.asarray(draw(keys[i : i + chunk], p)) for i in range(0, n, chunk)])


def _chi_square_p(counts: np.ndarray, p: np.ndarray) -> float:
    expected = p / p.sum() * counts.sum()
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    return stats.chisquare(observed, expected).pvalue


def _test_distribution(v: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(0)
    p = np.exp(2 * rng.normal(size=v))
    p[rng.choice(v, 300, replace=False)] = 0.0
    return p / p.sum()


def test_draws_follow_the_distribution_and_a_perturbed_one_is_rejected():
    p = _test_distribution()  # 1000 ids: 32 blocks of 32 with 24 padding slots
    counts = np.bincount(_draws(p, 200_000), minlength=p.size)
    assert _chi_square_p(counts, p) > 1e-3
    moved = p.copy()
    top = np.argsort(p)[::-1]
    moved[top[0]] -= 0.01
    moved[top[1]] += 0.01
    assert _chi_square_p(counts, moved) < 1e-6  # the test's power: 1% of the mass moved is seen


def test_zero_probability_ids_are_never_drawn():
    v = 1000
    cases = {
        "scattered": [3, 500, 999],
        "first id only": [0],
        "last id only": [999],  # the last block is mostly padding
        "one block": list(range(32, 64)),
    }
    for name, support in cases.items():
        p = np.zeros(v)
        p[support] = np.linspace(1.0, 1e-7, len(support))
        drawn = np.unique(_draws(p, 50_000, seed=len(name)))
        assert set(drawn) <= set(support), name


def test_a_long_tail_of_tiny_probabilities_keeps_its_mass():
    # Gemma's vocabulary: 0.2% of the mass over 200,000 ids of 1e-8 each, past
    # the bulk. A sequential float32 running sum adds 1e-8 to a total near 1
    # (ulp 6e-8) and rounds every step to nothing.
    v = 262_144
    p = np.zeros(v)
    p[:8] = (1 - 0.002) / 8
    p[v - 200_000 :] = 1e-8
    n = 400_000
    tail = np.sum(_draws(p, n) >= v - 200_000)
    expected, sd = n * 0.002, np.sqrt(n * 0.002 * 0.998)
    assert abs(tail - expected) < 5 * sd, (tail, expected)

    # The negative control: one sequential float32 running sum, inverted with the same kind of uniforms.
    cdf = np.cumsum(p.astype(np.float32), dtype=np.float32)
    uniforms = np.random.default_rng(1).random(n, dtype=np.float32)
    naive = np.searchsorted(cdf, uniforms * cdf[-1], side="right")
    assert np.sum(naive >= v - 200_000) == 0


def test_categorical_keeps_the_leading_shape_and_greedy_is_the_argmax():
    p = jnp.asarray(np.stack([_test_distribution(), _test_distribution()[::-1]]).reshape(2, 1, -1))
    keys = jax.random.split(jax.random.key(0), 2).reshape(2, 1)
    drawn = row_rng.categorical(keys, p)
    assert drawn.shape == (2, 1) and drawn.dtype == jnp.int32
    assert np.all(np.take_along_axis(np.asarray(p), np.asarray(drawn)[..., None], -1) > 0)
    np.testing.assert_array_equal(row_rng.categorical(keys, p, greedy=True), np.argmax(p, -1))
