"""KVCache.commit of a tree's accepted path against a slot-by-slot reference, and the in-place switch it runs on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.kv_cache import KVCache
from models.switch_in_place import switch_in_place


def _cache(rng, batch=3, slots=40, layers=2, kv_heads=2, head_dim=4):
    keys = tuple(jnp.asarray(rng.standard_normal((batch, kv_heads, head_dim, slots)), jnp.float32) for _ in range(layers))
    values = tuple(jnp.asarray(rng.standard_normal((batch, kv_heads, slots, head_dim)), jnp.float32) for _ in range(layers))
    return KVCache(keys, values, jnp.asarray(rng.integers(0, 5, batch), jnp.int32))


def _reference(cache: KVCache, n_accepted, path):
    """Row b's accepted nodes path[b, :n] copied, in depth order, to the slots from lengths[b] on."""
    keys = [np.array(k) for k in cache.keys]
    values = [np.array(v) for v in cache.values]
    for b, n in enumerate(np.asarray(n_accepted)):
        at = int(cache.lengths[b])
        for layer in range(len(keys)):
            k, v = np.array(keys[layer][b]), np.array(values[layer][b])
            for i in range(n):
                keys[layer][b, :, :, at + i] = k[:, :, at + path[b, i]]
                values[layer][b, :, at + i] = v[:, at + path[b, i]]
    return keys, values, np.asarray(cache.lengths) + np.asarray(n_accepted)


@pytest.mark.parametrize("case", ["in place", "one row deep", "every row", "nothing accepted"])
def test_tree_commit_moves_each_accepted_path_into_contiguous_slots(case):
    rng = np.random.default_rng(len(case))
    cache = _cache(rng)
    depth = 17
    path = np.tile(np.arange(depth), (3, 1))
    n_accepted = np.array([3, 1, 2])
    if case == "one row deep":  # the deepest misplaced node decides how much of the path moves: 9 of 17
        path[1, 1:9] = [2, 5, 6, 9, 12, 13, 15, 16]
        n_accepted = np.array([3, 9, 0])
    elif case == "every row":
        path[:, 1:] = rng.permutation(np.arange(1, depth))[None, :]
        n_accepted = np.array([17, 4, 1])
    elif case == "nothing accepted":
        path[:, 1:] = 16
        n_accepted = np.zeros(3, int)
    path[np.arange(depth)[None, :] >= n_accepted[:, None]] = 99  # past the accepted nodes: junk, never read
    got = jax.jit(KVCache.commit)(cache, jnp.asarray(n_accepted, jnp.int32), jnp.asarray(path, jnp.int32))
    keys, values, lengths = _reference(cache, n_accepted, path)
    np.testing.assert_array_equal(got.lengths, lengths)
    for layer in range(len(keys)):
        np.testing.assert_array_equal(got.keys[layer], keys[layer])
        np.testing.assert_array_equal(got.values[layer], values[layer])


def test_switch_in_place_runs_the_chosen_branch_only():
    branches = [lambda x, i=i: x * 10 + i for i in range(3)]
    run = jax.jit(lambda index, x: switch_in_place(index, branches, x))
    x = jnp.arange(4.0)
    for index in range(3):
        np.testing.assert_array_equal(run(index, x), x * 10 + index)
    np.testing.assert_array_equal(run(-1, x), x)
    np.testing.assert_array_equal(run(3, x), x)
