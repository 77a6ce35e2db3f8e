"""Tree acceptance: structure, greedy, and losslessness over many vmapped trials (jaxspec/tree.py).

The toy target's distribution after a path of tokens is a fixed function of
that path, so siblings carrying one token see one distribution, as in a real
model. A step emits the first token t1 and, when t1 is a child of the root,
a second token t2. A lossless rule emits t1 ~ p_root and, whenever a t2
comes, t2 ~ p_{t1}, whatever the drafted tree. Each test checks both with
chi-square tests over 300 000 trials; the two wrong rules the issue names (a fresh draw after a
rejection, and siblings tried against a residual that forgot the earlier ones)
must fail the same test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxspec import row_rng
from jaxspec.acceptance import accept_point_mass
from jaxspec.row_rng import RowRandom
from jaxspec.tree import accept_tree_point_mass, chain_parents, tree_ratio_walk, tree_shape

V, TRIALS = 5, 300_000
# Root with three children (nodes 0-2); nodes 0 and 1 have two children each (3, 4 and 5, 6).
PARENTS = np.array([-1, -1, -1, 0, 0, 1, 1], np.int32)
T = len(PARENTS)


def _table(seed):
    """p after the empty path [V], after one token [V, V]; q likewise: the toy target and drafter."""
    rs = np.random.RandomState(seed)
    return (rs.dirichlet(np.ones(V) * 0.8).astype(np.float32), rs.dirichlet(np.ones(V) * 0.8, V).astype(np.float32),
            rs.dirichlet(np.ones(V) * 0.8).astype(np.float32), rs.dirichlet(np.ones(V) * 0.8, V).astype(np.float32))


def _target(tokens, p_root, p_next):
    """p [B, 1 + T, V] after each window index: the root, then each node (depth 1 or 2) by its path."""
    b = tokens.shape[0]
    depth1 = p_next[tokens[:, :3]]  # after a depth-1 node: a function of its token
    # After a depth-2 node the toy target looks only at the last token too (any fixed function will do).
    depth2 = p_next[tokens[:, 3:]]
    return jnp.concatenate([jnp.broadcast_to(p_root, (b, 1, V)), depth1, depth2], axis=1)


def _joint(verdict, tokens):
    """Counts of (t1, t2) with t2 = V for 'no second token'."""
    n, nxt, path = map(np.asarray, verdict)
    tokens = np.asarray(tokens)
    rows = np.arange(len(n))
    t1 = np.where(n >= 1, tokens[rows, np.maximum(path[:, 1] - 1, 0)], nxt)
    t2 = np.where(n >= 2, tokens[rows, np.maximum(path[:, 2] - 1, 0)], np.where(n == 1, nxt, V))
    return np.bincount(t1 * (V + 1) + t2, minlength=V * (V + 1)).reshape(V, V + 1)


def _pvalue(counts, p_root, p_next):
    """The smallest (Bonferroni-corrected) p-value of: t1 ~ p_root, and for each t1, t2 ~ p_{t1} over the
    trials that emitted a t2. (Whether a t2 comes depends on the drafted tree, so the pair is not tested
    jointly: only these two facts hold for any tree.)"""
    tests = [(counts.sum(axis=1), p_root)] + [(counts[t1, :V], p_next[t1]) for t1 in range(V)]
    pvalues = []
    for observed, p in tests:
        if observed.sum() < 2000:
            continue
        p = np.asarray(p, np.float64)
        keep = p > 0
        assert observed[~keep].sum() == 0
        pvalues.append(stats.chisquare(observed[keep], p[keep] * observed.sum() / p[keep].sum()).pvalue)
    assert len(pvalues) >= 3, "too few trials reached a second token"
    return min(pvalues) * len(pvalues)


def _rand(n, seed):
    return RowRandom(jnp.arange(n, dtype=jnp.uint32) + np.uint32(seed * 1_000_003), jnp.zeros((n,), jnp.int32))


def _shape(n):
    return tree_shape(jnp.broadcast_to(jnp.asarray(PARENTS), (n, T)))


def test_tree_shape_depths_and_ancestors():
    s = tree_shape(jnp.asarray(PARENTS)[None])
    assert np.asarray(s.depth)[0].tolist() == [0, 1, 1, 1, 2, 2, 2, 2]
    anc = np.asarray(s.ancestors)[0]
    assert np.flatnonzero(anc[4]).tolist() == [0, 1, 4]  # node 3: root, node 0, itself
    assert np.flatnonzero(anc[7]).tolist() == [0, 2, 7]
    assert np.flatnonzero(anc[3]).tolist() == [0, 3]


def test_point_mass_on_a_chain_is_the_chain_rule():
    """Same seeds, same tokens: the tree rule on parents i - 1 is today's chain rule, draw for draw."""
    n, k = 4096, 4
    rs = np.random.RandomState(0)
    p = jnp.asarray(rs.dirichlet(np.ones(V) * 0.3, (n, k + 1)).astype(np.float32))
    x = jnp.asarray(rs.randint(0, 2, (n, k)).astype(np.int32))
    n_valid = jnp.asarray(rs.randint(0, k + 1, n).astype(np.int32))
    rand = _rand(n, 1)
    want_n, want_next = accept_point_mass(rand, p, x, n_valid)
    valid = jnp.arange(k)[None, :] < n_valid[:, None]
    got = accept_tree_point_mass(rand, p, x, valid, tree_shape(chain_parents(n, k)))
    assert np.array_equal(got.n_accepted, want_n) and np.array_equal(got.next_token, want_next)
    assert np.mean(np.asarray(want_n) >= 2) > 0.02  # drafts do get accepted, some two deep


def test_greedy_takes_the_deepest_matching_path_and_never_padding():
    #            node: 0  1  2  3  4  5  6
    tokens = jnp.asarray([[1, 2, 3, 0, 4, 2, 3]])
    p = np.zeros((1, 1 + T, V), np.float32)
    argmax_after = {0: 2, 1: 1, 2: 0, 3: 4, 4: 3, 5: 1, 6: 3, 7: 4}  # window index -> the target's token
    for w, a in argmax_after.items():
        p[0, w, a] = 1.0
    valid = jnp.ones((1, T), bool)
    v = accept_tree_point_mass(_rand(1, 0), jnp.asarray(p), tokens, valid, _shape(1), greedy=True)
    # The root's argmax 2 is node 1; node 1's (window 2) is 0, neither child 5 (2) nor 6 (3): stop at node 1.
    assert (int(v.n_accepted[0]), int(v.next_token[0]), np.asarray(v.path)[0, :2].tolist()) == (1, 0, [0, 2])
    p[0, 2] = 0
    p[0, 2, 3] = 1.0  # now node 1's argmax is 3 = node 6, whose argmax (window 7) is 4
    v = accept_tree_point_mass(_rand(1, 0), jnp.asarray(p), tokens, valid, _shape(1), greedy=True)
    assert (int(v.n_accepted[0]), int(v.next_token[0]), np.asarray(v.path)[0, :3].tolist()) == (2, 4, [0, 2, 7])
    v = accept_tree_point_mass(_rand(1, 0), jnp.asarray(p), tokens, valid.at[0, 6].set(False), _shape(1), greedy=True)
    assert (int(v.n_accepted[0]), int(v.next_token[0])) == (1, 3)  # the padding node matches but is not accepted


def _point_mass_tokens(n):
    """Distinct children: the root's are 0, 1, 2; node 0's are 1, 3; node 1's are 0, 4."""
    return jnp.broadcast_to(jnp.asarray([0, 1, 2, 1, 3, 0, 4], jnp.int32), (n, T))


def test_point_mass_tree_is_lossless():
    p_root, p_next, _, _ = _table(1)
    tokens = _point_mass_tokens(TRIALS)
    verdict = accept_tree_point_mass(_rand(TRIALS, 2), _target(tokens, p_root, p_next), tokens,
                                     jnp.ones((TRIALS, T), bool), _shape(TRIALS))
    assert _pvalue(_joint(verdict, tokens), p_root, p_next) > 1e-3


def _sampled_tree(n, q_root, q_next, seed):
    """Children drawn i.i.d. from q: the root's three from q_root, each depth-2 pair from q after its parent."""
    keys = jax.random.split(jax.random.key(seed), 3)
    first = jax.random.categorical(keys[0], jnp.log(q_root), shape=(n, 3))
    second = jax.random.categorical(keys[1], jnp.log(q_next[first[:, :2]]), shape=(2, n, 2))
    second = jnp.transpose(second, (1, 2, 0)).reshape(n, 4)
    tokens = jnp.concatenate([first, second], axis=1).astype(jnp.int32)
    q = jnp.concatenate([jnp.broadcast_to(q_root, (n, 3, V)), q_next[tokens[:, [0, 0, 1, 1]]]], axis=1)
    return tokens, q


def _walk(seed, **variant):
    p_root, p_next, q_root, q_next = _table(seed)
    tokens, q = _sampled_tree(TRIALS, jnp.asarray(q_root), jnp.asarray(q_next), seed)
    verdict = tree_ratio_walk(_rand(TRIALS, seed), _target(tokens, p_root, p_next), q, tokens,
                              jnp.ones((TRIALS, T), bool), _shape(TRIALS), **variant)
    return _pvalue(_joint(verdict, tokens), p_root, p_next)


def _point_mass_walk(seed, **variant):
    p_root, p_next, _, _ = _table(seed)
    tokens = _point_mass_tokens(TRIALS)
    q = jax.nn.one_hot(tokens, V)
    verdict = tree_ratio_walk(_rand(TRIALS, seed), _target(tokens, p_root, p_next), q, tokens,
                              jnp.ones((TRIALS, T), bool), _shape(TRIALS), **variant)
    return _pvalue(_joint(verdict, tokens), p_root, p_next)


def test_ratio_walk_is_lossless_for_sampled_and_point_mass_trees():
    assert _walk(3) > 1e-3
    assert _point_mass_walk(4) > 1e-3


def _forget(residual, q_node):
    return residual


def test_wrong_tree_rules_fail_the_same_test():
    """Negative controls: the test has the power to catch the two classic mistakes."""
    assert _walk(3, final_from_residual=False) < 1e-6  # a fresh draw from p after the last rejection
    assert _walk(3, on_reject=_forget) < 1e-6  # siblings tried against p, not the residual
    assert _point_mass_walk(4, final_from_residual=False) < 1e-6
    assert _point_mass_walk(4, on_reject=_forget) < 1e-6


def test_node_keys_differ_between_siblings():
    keys = RowRandom(jnp.zeros((1,), jnp.uint32), jnp.zeros((1,), jnp.int32)).node_keys(
        row_rng.ACCEPT, jnp.asarray([[1, 1, 1]]))
    u = np.asarray(row_rng.uniform(keys))[0]
    assert len(set(u.tolist())) == 3
