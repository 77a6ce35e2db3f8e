"""Prompt lookup as a tree: the best M matches' continuations merged into a trie, verified in one forward."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import SamplingConfig
from jaxspec.generate import generate
from jaxspec.drafters.base import Context
from jaxspec.drafters.prompt_lookup import PromptLookup, PromptLookupTree
from jaxspec.errors import InputError
from jaxspec.methods import build_drafter
from tests.random_models import VOCAB, random_model, random_t5gemma


def _context(rows, width=24):
    history = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        history[i, : len(r)] = r
    n = len(rows)
    return Context(jnp.asarray(history), jnp.asarray([len(r) for r in rows]), jnp.asarray([len(r) for r in rows]),
                   jnp.zeros((n,), bool), jnp.zeros((n,), jnp.uint32))


def test_matches_merge_into_a_trie():
    # The last bigram (1, 2) occurs three times before: followed by 7 8 9, by 3 4 5 and by 7 8 6. The
    # most recent match comes first: branch 0 = 7 8 6, branch 1 = 3 4 5, branch 2 = 7 8 9 (shares 7 8).
    row = [1, 2, 7, 8, 9, 0, 1, 2, 3, 4, 5, 0, 1, 2, 7, 8, 6, 0, 1, 2]
    draft, _ = PromptLookupTree(3, 3, 2).propose(None, (), _context([row]))
    tokens, parents, valid = (np.asarray(x)[0].tolist() for x in (draft.tokens, draft.parents, draft.valid))
    # Node d * 3 + m is depth d of branch m.
    assert tokens == [7, 3, 7, 8, 4, 8, 6, 5, 9]
    assert valid == [True, True, False, True, True, False, True, True, True]
    assert parents == [-1, -1, -1, 0, 1, 0, 3, 4, 3]  # 9 hangs under branch 0's 8: one shared path 7 8


def test_one_branch_drafts_what_the_chain_drafts():
    rng = np.random.RandomState(0)
    rows = [rng.randint(0, 5, size=n).tolist() for n in (6, 15, 20, 2)]
    ctx = _context(rows)
    chain, _ = PromptLookup(4, 3).propose(None, (), ctx)
    tree, _ = PromptLookupTree(1, 4, 3).propose(None, (), ctx)
    n = np.asarray(chain.n_valid)
    assert np.asarray(tree.valid).sum(axis=1).tolist() == n.tolist()
    for i in range(len(rows)):
        assert np.asarray(tree.tokens)[i, : n[i]].tolist() == np.asarray(chain.tokens)[i, : n[i]].tolist()


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_lookup_tree_emits_what_plain_decoding_emits(temperature):
    """Greedy: equal to plain greedy; sampled: point-mass drafts, so equal to plain sampling per seed.

    Sampled, the logits are scaled until drafts are sometimes accepted: at scale 2 to 12 this model's
    sampled text hardly ever repeats an n-gram (about one draft accepted in 90 tokens, whichever the
    sampler), so the test would not exercise acceptance; at 20 its text still differs from greedy."""
    model, params = random_model(31, 2, 32, 4, 2, window=5, scale=6.0 if temperature == 0 else 20.0)
    rng = np.random.RandomState(2)
    prompts = [(rng.randint(0, VOCAB, size=5).tolist() * 4)[:n] for n in (17, 9, 3)]
    sampling = SamplingConfig(temperature=temperature)
    plain = generate(model, params, prompts, max_new_tokens=30, sampling=sampling, seed=[3, 4, 5])
    drafter, _ = build_drafter("prompt-lookup", batch=3, sampling=sampling, target_vocab=VOCAB, num_draft_tokens=5,
                               lookup_branches=3, ngram=2)
    tree = generate(model, params, prompts, max_new_tokens=30, sampling=sampling, seed=[3, 4, 5], drafter=drafter)
    assert [g.output_ids for g in tree] == [g.output_ids for g in plain]
    assert max(max(g.accept_lengths) for g in tree) >= (3 if temperature == 0 else 2)


def test_encoder_decoder_lookup_tree_copies_from_the_input():
    model, params = random_t5gemma(6, 2, 6.0)
    prompts = [[5, 6, 7, 8, 9, 10, 5, 6, 7], [11, 12, 13]]
    plain = generate(model, params, prompts, max_new_tokens=16)
    fast = generate(model, params, prompts, max_new_tokens=16, drafter=PromptLookupTree(2, 4, 1))
    assert [g.output_ids for g in fast] == [g.output_ids for g in plain]


def test_bad_branch_count_is_clear():
    with pytest.raises(InputError, match="lookup branches must be >= 1"):
        build_drafter("prompt-lookup", batch=1, sampling=SamplingConfig(), target_vocab=VOCAB, lookup_branches=0)
