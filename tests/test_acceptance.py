"""Acceptance rules preserve the target distribution, shown over many vmapped trials on a toy vocabulary.

At every position i of a step's emitted tokens (accepted drafts, then the
rule's own token), given that the step got that far, the token must follow
p_i exactly. With 400 000 trials the total-variation noise per position is
below 0.005, so the 0.01 bound fails any rule that is 2% off; a deliberately
biased rule is shown to fail it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxspec import row_rng
from jaxspec.acceptance import _first_false, accept_point_mass, accept_ratio
from jaxspec.decode_loop import DecodeSpec, accept
from jaxspec.drafters.base import Draft
from jaxspec.row_rng import RowRandom
from jaxspec.sampling import SamplingConfig, target_distribution
from jaxspec.tree import chain_parents, tree_ratio_walk, tree_shape

V, K, TRIALS = 6, 3, 400_000
TV_BOUND = 0.01


def _dists(seed):
    rs = np.random.RandomState(seed)
    p = rs.dirichlet(np.ones(V) * 0.7, size=K + 1).astype(np.float32)
    q = rs.dirichlet(np.ones(V) * 0.7, size=K).astype(np.float32)
    return jnp.asarray(p), jnp.asarray(q)


def _emitted_positions(drafts, n, nxt):
    """For each position i: the tokens emitted there, over the trials that reached it."""
    drafts, n, nxt = map(np.asarray, (drafts, n, nxt))
    out = []
    for i in range(K + 1):
        reached = n >= i
        tok = np.where(n[reached] == i, nxt[reached], drafts[reached, min(i, K - 1)])
        out.append(tok)
    return out


def _assert_follows(tokens_by_position, p, min_samples=20_000):
    checked = 0
    for i, tokens in enumerate(tokens_by_position):
        if len(tokens) < min_samples:
            continue
        counts = np.bincount(tokens, minlength=V)
        expected = np.asarray(p[i], np.float64)
        tv = 0.5 * np.abs(counts / len(tokens) - expected).sum()
        assert tv < TV_BOUND, f"position {i}: total variation {tv:.4f}"
        keep = expected > 0
        assert counts[~keep].sum() == 0
        assert stats.chisquare(counts[keep], expected[keep] * len(tokens) / expected[keep].sum()).pvalue > 1e-4
        checked += 1
    assert checked >= 2, "too few positions reached to test"


def _rand(seed) -> RowRandom:
    """One row's randomness, the trial's index as its seed, its window starting at position 0."""
    return RowRandom(jnp.asarray(seed, jnp.uint32)[None], jnp.zeros((1,), jnp.int32))


def _ratio_trials(p, q, n_draft, rule=accept_ratio):
    def one(seed):
        rand = _rand(seed)
        x = row_rng.categorical(rand.keys(row_rng.DRAFT, K)[0], q)
        n, nxt = rule(rand, p[None], q[None], x[None], jnp.asarray([n_draft]))
        return x, n[0], nxt[0]

    return jax.jit(jax.vmap(one))(jnp.arange(TRIALS))


@pytest.mark.parametrize("seed", [0, 1])
def test_ratio_rule_is_lossless(seed):
    p, q = _dists(seed)
    x, n, nxt = _ratio_trials(p, q, K)
    assert int(np.max(n)) <= K
    _assert_follows(_emitted_positions(x, n, nxt), p)


def test_ratio_rule_respects_fewer_valid_drafts():
    p, q = _dists(2)
    x, n, nxt = _ratio_trials(p, q, 1)
    assert int(np.max(n)) <= 1
    _assert_follows(_emitted_positions(x, n, nxt)[:2], p)


def _point_mass_trials(p, drafts, rule=accept_point_mass):
    def one(seed):
        n, nxt = rule(_rand(seed), p[None], drafts[None], jnp.asarray([K]))
        return n[0], nxt[0]

    n, nxt = jax.jit(jax.vmap(one))(jnp.arange(TRIALS) + TRIALS)
    return np.broadcast_to(np.asarray(drafts), (TRIALS, K)), n, nxt


@pytest.mark.parametrize("seed", [0, 3])
def test_point_mass_rule_is_lossless(seed):
    p, _ = _dists(seed)
    drafts = jnp.argmax(p[:K], axis=-1).astype(jnp.int32)  # likely drafts, so later positions are reached
    _assert_follows(_emitted_positions(*_point_mass_trials(p, drafts)), p)


def _biased_point_mass(rand, p, x, n_draft):
    """The wrong rule: accept x with probability p(x), but on rejection draw afresh from p."""
    px = jnp.take_along_axis(p[:, :-1], x[..., None], axis=2)[..., 0]
    n = _first_false(row_rng.uniform(rand.keys(row_rng.ACCEPT, x.shape[1])) < px, n_draft)
    fresh = row_rng.categorical(rand.keys_at(row_rng.TARGET, n), jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0])
    return n, fresh


def test_the_check_has_power_a_fresh_draw_at_rejection_fails():
    p, _ = _dists(0)
    drafts = jnp.argmax(p[:K], axis=-1).astype(jnp.int32)
    with pytest.raises(AssertionError, match="total variation"):
        _assert_follows(_emitted_positions(*_point_mass_trials(p, drafts, _biased_point_mass)), p)


def test_greedy_is_longest_matching_prefix_then_argmax():
    logits = np.random.RandomState(5).randn(2, K + 1, V)
    p = jax.nn.one_hot(jnp.argmax(logits, -1), V)
    argmax = np.asarray(jnp.argmax(logits, -1))
    drafts = argmax[:, :K].copy()
    drafts[0, 1] = (drafts[0, 1] + 1) % V  # row 0 mismatches at position 1; row 1 matches all
    rand = RowRandom(jnp.asarray([0, 1], jnp.uint32), jnp.asarray([3, 7], jnp.int32))
    for rule in (
        lambda: accept_point_mass(rand, p, jnp.asarray(drafts), jnp.asarray([K, K])),
        lambda: accept_ratio(rand, p, jax.nn.one_hot(drafts, V), jnp.asarray(drafts), jnp.asarray([K, K])),
    ):
        n, nxt = map(np.asarray, rule())
        assert n.tolist() == [1, K]
        assert nxt.tolist() == [argmax[0, 1], argmax[1, K]]


@pytest.mark.parametrize("tree", [False, True])
def test_a_step_without_drafts_draws_what_the_ratio_rule_draws(tree):
    """decode_loop.accept takes plain sampling where no row drafted (p at one index, no walk over q):
    the same tokens, row by row, as the full ratio rule with nothing valid, and the full rule where some
    row drafted."""
    b, vocab = 256, 50
    spec = DecodeSpec(8, SamplingConfig(temperature=0.8, top_p=0.9))
    rs = np.random.RandomState(7)
    logits = jnp.asarray(rs.randn(b, K + 1, vocab) * 3, jnp.float32)
    q = jax.nn.softmax(jnp.asarray(rs.randn(b, K, vocab), jnp.float32), axis=-1)
    tokens = jnp.asarray(rs.randint(0, vocab, (b, K)), jnp.int32)
    rand = RowRandom(jnp.arange(b, dtype=jnp.uint32), jnp.asarray(rs.randint(0, 100, b), jnp.int32))
    parents = chain_parents(b, K) if tree else None
    shape = tree_shape(parents) if tree else None
    draft = Draft(tokens, jnp.full((b,), K, jnp.int32), q, parents)
    p = target_distribution(logits, spec.sampling)

    def full_rule(n_valid):
        if not tree:
            return accept_ratio(rand, p, q, tokens, n_valid)
        valid = jnp.arange(K)[None, :] < n_valid[:, None]
        return tuple(tree_ratio_walk(rand, p, q, tokens, valid, shape))[:2]

    for n_valid in (jnp.zeros((b,), jnp.int32), jnp.asarray(rs.randint(0, 2, b), jnp.int32)):
        n, token, _ = jax.jit(accept, static_argnums=0)(spec, rand, logits, None, draft, n_valid, shape)
        want_n, want_token = full_rule(n_valid)
        np.testing.assert_array_equal(n, want_n)
        np.testing.assert_array_equal(token, want_token)
    assert len(set(np.asarray(token).tolist())) > 10  # the rows drew different tokens
