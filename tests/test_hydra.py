"""Hydra heads (models/hydra.py, jaxspec/drafters/hydra.py): decoding drafts what training teaches, and the
prefix layer's cache follows the target's exactly. Exactness through the loop is in test_tree_engine."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.drafters.base import Context
from jaxspec.drafters.hydra import expansions
from jaxspec.generate import _pad, generate
from jaxspec.static_tree import grow, prior_accuracy
from tests.random_models import random_model
from tests.test_speculative import final_decode_state
from tests.test_tree_engine import _medusa, random_heads

CHAIN_ACCURACY = ((0.9, 1e-6),) * 3  # grows a chain of each depth's top guess


def _teacher_forced(model, params, loaded, tokens):
    """Hidden states of a row of tokens [T] and the heads' training logits over them [T, K, N] (whole vocabulary)."""

    @jax.jit
    def run(params, heads_params, seq):
        t = seq.shape[1]
        hidden = model.forward(params, seq, jnp.arange(t)[None], model.init_cache(1, t)).hidden
        table = model.output_embedding(params)
        return hidden, loaded.heads.training_logits(heads_params, hidden, seq, table, table)[0]

    return run(params, loaded.params, jnp.asarray(tokens, jnp.int32)[None])


def first_draft(model, params, drafter, dparams, prompts):
    """The drafter's draft after the target's prefill of `prompts`, as the loop's first step proposes it."""
    tokens, lengths = map(jnp.asarray, _pad(prompts))
    b = len(prompts)

    @jax.jit
    def run(params, dparams):
        start = model.start(params, tokens, lengths, 8)
        state = drafter.init(dparams, tokens, lengths, 8, start)
        history = jnp.pad(tokens, ((0, 0), (0, 8)))
        ctx = Context(history, lengths, lengths, jnp.zeros((b,), bool), jnp.zeros((b,), jnp.uint32))
        return drafter.propose(dparams, state, ctx)[0]

    return run(params, dparams)


def assert_row_committed(cache, b, reference, n):
    """A one-layer drafter cache's row b holds n committed slots equal to a one-row reference cache's first n."""
    assert int(cache.lengths[b]) == n
    np.testing.assert_allclose(np.asarray(cache.keys[0][b, ..., :n]), np.asarray(reference.keys[0][0, ..., :n]),
                               atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(cache.values[0][b, :, :n]), np.asarray(reference.values[0][0, :, :n]),
                               atol=2e-5, rtol=1e-5)


def test_expansions_follow_the_tree_depth_by_depth():
    tree = grow(prior_accuracy(3, 3), 9)
    covered = []
    for depth, e in enumerate(expansions(tree), start=1):
        covered += e.nodes
        for n, s in zip(e.nodes, e.slot):
            assert tree.depth[n] == depth and tree.parents[n] == e.parents[s] and tree.rank[n] < e.ranks
        for parent, path in zip(e.parents, e.paths):
            walk = []
            while parent >= 0:
                walk.insert(0, parent)
                parent = tree.parents[parent]
            assert path == tuple(walk) and len(path) == depth - 1
    assert sorted(covered) == list(range(tree.size))


@pytest.mark.parametrize("prefix", [False, True])
def test_drafts_are_the_heads_top_guesses_over_the_drafted_path(prefix):
    """A chain of top guesses drafted at decode time equals, head by head, the argmax of the teacher-forced
    training logits over the prompt followed by those very drafts: decoding feeds the heads what training
    does (f before the last emitted token, then the path's embeddings)."""
    model, params = random_model(3, 2, 32, 4, 2, scale=3.0)
    loaded = random_heads(model, kind="hydra", num_layers=2, attention_heads=2 if prefix else None,
                          accuracy=CHAIN_ACCURACY)
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]]
    drafter, dparams = _medusa(model, params, loaded, 3, 3, method="hydra")
    assert drafter.tree.parents == (-1, 0, 1)
    draft = first_draft(model, params, drafter, dparams, prompts)
    for b, prompt in enumerate(prompts):
        drafts = np.asarray(draft.tokens[b]).tolist()
        _, logits = _teacher_forced(model, params, loaded, prompt + drafts)
        guesses = np.argmax(np.asarray(logits[len(prompt) - 2]), axis=-1).tolist()  # head k's guess at depth k + 1
        assert guesses == drafts


def test_prefix_cache_after_decoding_holds_the_teacher_forced_prefix_layer():
    """After a whole decode (tree steps accepting paths of every length), the prefix layer's committed K/V
    equal the prefix layer run once over the target's hidden states of the final text, and f is its output
    at the last accepted path's end: n - 2 for a text of n tokens, or up to the tree's depth further where
    the budget cut off accepted drafts (those follow the greedy text, so a longer greedy run holds them)."""
    model, params = random_model(5, 2, 32, 4, 2, scale=12.0, window=4)
    loaded = random_heads(model, kind="hydra", attention_heads=4)
    prompts = [[3, 4, 5, 6, 7], [8, 9], [5, 5, 5]]
    drafter, dparams = _medusa(model, params, loaded, 3, 8, method="hydra")
    state = final_decode_state(model, params, prompts, 14, drafter, dparams)
    assert int(jnp.max(state.accept_lengths)) >= 2  # some steps committed a path through the tree
    depth = max(drafter.tree.depth)
    longer = generate(model, params, prompts, max_new_tokens=14 + depth)
    heads, hydra = loaded.heads, state.drafter_state
    for b, prompt in enumerate(prompts):
        n = int(state.seq_len[b])
        text = prompt + longer[b].output_ids
        assert np.asarray(state.history[b, :n]).tolist() == text[:n]
        hidden, _ = _teacher_forced(model, params, loaded, text)
        f, cache = heads.features(loaded.params, hidden, jnp.arange(len(text))[None], heads.init_prefix_cache(1, len(text)))
        gaps = np.abs(np.asarray(f[0, n - 2 : n - 1 + depth]) - np.asarray(hydra.feature[b])).max(axis=-1)
        assert gaps.min() < 1e-4
        assert_row_committed(hydra.prefix_cache, b, cache, n - 1)


def test_untrained_hydra_heads_guess_what_untrained_medusa_heads_guess():
    """R starts as the identity on f and W at zero: a fresh Hydra head ignores the drafted tokens."""
    model, params = random_model(4, 1, 32, 4, 2)
    medusa = random_heads(model, scale=0.0)
    hydra = random_heads(model, kind="hydra", scale=0.0)
    hidden = jax.random.normal(jax.random.key(1), (2, 5, 32))
    tokens = jnp.arange(10).reshape(2, 5)
    table = model.output_embedding(params)
    np.testing.assert_allclose(
        np.asarray(hydra.heads.training_logits(hydra.params, hidden, tokens, table, table)),
        np.asarray(medusa.heads.training_logits(medusa.params, hidden, tokens, table, table)), atol=1e-5)

