"""The blocked argmax and top-k give exactly jnp.argmax's and lax.top_k's answers: ties, NaN, -inf, ragged blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import vocab_reduce


def _rows(vocab: int, seed: int, special: bool = False) -> np.ndarray:
    """[2, 3, vocab] rows built to trip a blocked search: few distinct values (ties within and across
    blocks), a maximum repeated at both ends, one in the padded last block, one row of distinct values;
    `special` adds a row with NaN, which sends argmax to the plain search, a row of -inf and a row masked to
    -inf outside a few ids (a draft vocabulary's logits), which keep the blocked search."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, (2, 3, vocab)).astype(np.float32)
    x[0, 1, [vocab - 1, 1, vocab // 2]] = 9.0  # the first of three equal maxima wins
    x[1, 1] = rng.standard_normal(vocab)
    x[1, 2, -1] = 5.0
    if special:
        x[0, 2, rng.integers(0, vocab, 2)] = np.nan
        x[1, 0] = -np.inf
        x[0, 0, rng.permutation(vocab)[: vocab - 7]] = -np.inf
    return x


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("vocab", [100, 4096, 5003, 32000, 262144])
def test_argmax_matches_jnp_argmax(vocab, special):
    x = jnp.asarray(_rows(vocab, vocab, special))
    got = jax.jit(vocab_reduce.argmax)(x)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, jnp.argmax(x, axis=-1))


def test_only_nan_sends_argmax_to_the_plain_search():
    x = _rows(32000, 0)
    x[0, 0, 5:] = -np.inf
    x[0, 1, 3] = np.inf
    assert not vocab_reduce.has_nan(jnp.asarray(x))
    x[1, 2, 31999] = np.nan
    assert vocab_reduce.has_nan(jnp.asarray(x))


@pytest.mark.parametrize("vocab,k", [(100, 3), (4096, 1), (5003, 8), (32000, 8), (262144, 8), (4099, 64)])
def test_top_k_matches_lax_top_k(vocab, k):
    x = _rows(vocab, vocab + k)
    x[1, 0] = -np.inf
    x = jnp.asarray(x)
    values, ids = jax.jit(vocab_reduce.top_k, static_argnums=1)(x, k)
    want_values, want_ids = jax.lax.top_k(x, k)
    assert ids.dtype == jnp.int32
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(values, want_values)


def test_top_k_keeps_every_winner_in_one_block():
    """All k best ids in the same block: the block maxima alone would pick k different blocks."""
    x = np.zeros((1, 8192), np.float32)
    x[0, 600:608] = np.arange(8, 0, -1)
    values, ids = vocab_reduce.top_k(jnp.asarray(x), 8)
    np.testing.assert_array_equal(ids[0], np.arange(600, 608))
    np.testing.assert_array_equal(values[0], np.arange(8, 0, -1))


def test_block_size_is_about_the_square_root():
    assert vocab_reduce.block_size(262144) == 512
    assert vocab_reduce.block_size(32000) == 128
    assert vocab_reduce.block_size(151936) == 512
