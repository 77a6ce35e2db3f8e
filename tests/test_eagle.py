"""The EAGLE-style drafter (models/eagle.py, jaxspec/drafters/eagle.py): its dynamic tree is EAGLE-2's,
computed from what training's unrolled steps compute, and its cache follows the target's exactly.
Exactness through the loop is in test_tree_engine."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.drafters.eagle import tree_width
from jaxspec.generate import generate
from tests.random_models import random_model
from tests.test_hydra import assert_row_committed, first_draft
from tests.test_speculative import final_decode_state
from tests.test_tree_engine import _medusa, random_heads

PAD_TO = 16  # teacher-forced rows are padded to one length: one compile


def _eagle(model, seed=0, steps=3):
    return random_heads(model, seed=seed, num_heads=steps, kind="eagle", attention_heads=2, scale=0.3)


def _teacher_forced(model, params, loaded):
    """tokens [T] -> (the target's hidden states [T, D], log-probabilities of each unrolled step [T, K, V])."""

    @jax.jit
    def run(params, heads_params, seq):
        hidden = model.forward(params, seq, jnp.arange(PAD_TO)[None], model.init_cache(1, PAD_TO)).hidden
        table = model.output_embedding(params)
        logits = loaded.heads.training_logits(heads_params, hidden, seq, table, table)[0]
        return hidden[0], jax.nn.log_softmax(logits, axis=-1)

    def call(tokens):
        seq = np.zeros((1, PAD_TO), np.int32)
        seq[0, : len(tokens)] = tokens
        return run(params, loaded.params, jnp.asarray(seq))

    return call


def _eagle2_tree(logp_after, size: int, depth: int, width: int) -> set[tuple[int, ...]]:
    """EAGLE-2's tree as its paper states it, from a function path -> log-probabilities of the next draft:
    expand the `width` best nodes of each depth by cumulative log-probability, each by its `width` best
    children; keep the `size` best of every node generated."""
    def best(path):
        logp = np.asarray(logp_after(path))
        return [(path + (int(x),), float(logp[x])) for x in np.argsort(-logp, kind="stable")[:width]]

    frontier = [(path, s) for path, s in best(())]
    pool = list(frontier)
    for _ in range(2, depth + 1):
        children = [(p, s + c) for path, s in frontier for p, c in best(path)]
        pool += children
        frontier = sorted(children, key=lambda n: -n[1])[:width]
    return {path for path, _ in sorted(pool, key=lambda n: -n[1])[:size]}


def test_the_tree_is_eagle2s_over_the_teacher_forced_steps():
    """Decoding's tree (frontier pairs in scratch slots under an ancestor mask) equals EAGLE-2's tree built
    from the teacher-forced unrolled steps training computes: depth d's distribution at a node is step
    d - 1's at the prompt's last pair, fed the node's path."""
    model, params = random_model(3, 2, 32, 4, 2, scale=3.0)
    loaded = _eagle(model)
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]]
    size, depth = 10, 3
    drafter, dparams = _medusa(model, params, loaded, 3, size, method="eagle")
    assert (drafter.depth, drafter.width) == (depth, tree_width(size, depth)) == (3, 8)
    draft = first_draft(model, params, drafter, dparams, prompts)
    forced = _teacher_forced(model, params, loaded)
    for b, prompt in enumerate(prompts):
        parents, toks = np.asarray(draft.parents[b]).tolist(), np.asarray(draft.tokens[b]).tolist()
        assert np.asarray(draft.valid[b]).all() and all(p < i for i, p in enumerate(parents))
        paths = []
        for i, p in enumerate(parents):
            paths.append((paths[p] if p >= 0 else ()) + (toks[i],))
        t = len(prompt) - 2  # the last committed pair
        want = _eagle2_tree(lambda path: forced(prompt + list(path))[1][t, len(path)], size, depth, drafter.width)
        assert set(paths) == want and len(paths) == size


def test_drafter_cache_after_decoding_holds_the_teacher_forced_pairs():
    """After a whole decode (tree steps accepting paths of every length), the drafter's committed K/V equal
    its layer run once over the final text's pairs (f_i, x_{i+1}), and g is its output at the last accepted
    path's end: n - 2 for a text of n tokens, or up to the tree's depth further where the budget cut off
    accepted drafts."""
    model, params = random_model(5, 2, 32, 4, 2, scale=12.0, window=4)
    loaded = _eagle(model, seed=2)
    prompts = [[3, 4, 5, 6, 7], [8, 9], [5, 5, 5]]
    drafter, dparams = _medusa(model, params, loaded, 3, 8, method="eagle")
    state = final_decode_state(model, params, prompts, 14, drafter, dparams)
    assert int(jnp.max(state.accept_lengths)) >= 2  # some steps committed a path through the tree
    longer = generate(model, params, prompts, max_new_tokens=14 + drafter.depth)
    heads, eagle = loaded.heads, state.drafter_state
    table = model.output_embedding(params)
    for b, prompt in enumerate(prompts):
        n = int(state.seq_len[b])
        text = prompt + longer[b].output_ids
        assert np.asarray(state.history[b, :n]).tolist() == text[:n]
        seq = jnp.asarray(text, jnp.int32)[None]
        hidden = model.forward(params, seq, jnp.arange(len(text))[None], model.init_cache(1, len(text))).hidden
        following = heads.token_inputs(table, jnp.pad(seq[:, 1:], ((0, 0), (0, 1))))
        g, cache = heads.extend(loaded.params, hidden, following, heads.init_cache(1, len(text)))
        gaps = np.abs(np.asarray(g[0, n - 2 : n - 1 + drafter.depth]) - np.asarray(eagle.feature[b])).max(axis=-1)
        assert gaps.min() < 1e-4
        assert_row_committed(eagle.cache, b, cache, n - 1)


@pytest.mark.parametrize("size, depth", [(1, 1), (2, 2), (12, 1), (16, 3), (64, 3)])
def test_the_pool_always_holds_the_tree(size, depth):
    width = tree_width(size, depth)
    assert width + (depth - 1) * width * width >= size and width >= min(size, 8)

