"""Tree drafts through the one loop: greedy exactness, sampled draws equal plain sampling's, cache equality.

`OracleTree` is a test drafter that fills a static tree from the plain greedy
output: at each depth the true next token sits at a rank that varies with the
row and position (sometimes at no node at all), the other nodes carry decoys.
So steps accept deep paths, sibling paths and nothing, in every mix across a
ragged batch, without any model having to be good at drafting.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxspec import SamplingConfig
from jaxspec.generate import generate
from jaxspec.drafters import Autoregressive
from jaxspec.drafters.base import Context, Draft
from jaxspec.errors import CheckpointError, InputError
from jaxspec.generate import _pad
from jaxspec.heads_io import KINDS, LoadedHeads, load_heads, save_heads, target_fields
from jaxspec.methods import (
    AUTO_TREE_SIZES, auto_tree_size, best_tree_size, build_drafter, head_accuracy, measured_drafting_cost,
)
from jaxspec.static_tree import StaticTree, grow, prior_accuracy
from models import Start
from models.medusa import MEDUSA, HeadsConfig, MedusaHeads
from tests.random_models import VOCAB, random_model, random_t5gemma
from tests.test_speculative import assert_committed_caches_equal, final_decode_state

TREE = grow(prior_accuracy(4, 3), 12)


@dataclasses.dataclass(frozen=True)
class OracleTree:
    tree: StaticTree
    vocab: int

    @property
    def num_draft_tokens(self) -> int:
        return self.tree.size

    def init(self, params, prompts, prompt_len, new_slots, start):
        return ()

    def propose(self, params, state, ctx: Context):
        """params: [B, H] each row's plain greedy history (prompt, then output)."""
        b, t = ctx.seq_len.shape[0], self.tree.size
        depth, rank = jnp.asarray(self.tree.depth)[None, :], jnp.asarray(self.tree.rank)[None, :]
        pos = ctx.seq_len[:, None] + depth - 1  # the history position the node's token would take
        truth = jnp.take_along_axis(params, jnp.clip(pos, 0, params.shape[1] - 1), axis=1)
        truth_rank = (pos * 7 + jnp.arange(b)[:, None] * 3) % 5  # rank 4 is at no node
        tokens = jnp.where(rank == truth_rank, truth, (truth + 1 + rank) % self.vocab)
        parents = jnp.broadcast_to(jnp.asarray(self.tree.parents, jnp.int32), (b, t))
        return Draft(tokens.astype(jnp.int32), jnp.full((b,), t, jnp.int32), None, parents, jnp.ones((b, t), bool)), state

    def update(self, params, state, ctx, verified):
        return state


def _histories(prompts, plain, width=128):
    out = np.zeros((len(prompts), width), np.int32)
    for i, (p, g) in enumerate(zip(prompts, plain)):
        row = list(p) + g.output_ids
        out[i, : len(row)] = row
    return jnp.asarray(out)


@st.composite
def scenarios(draw):
    seed = draw(st.integers(0, 10_000))
    layers = draw(st.integers(1, 2))
    kv_heads = draw(st.sampled_from([1, 2, 4]))
    window = draw(st.sampled_from([None, 4]))  # 4: shorter than most prompts and than the tree's window
    batch = draw(st.integers(1, 4))
    prompt_lengths = draw(st.lists(st.integers(1, 16), min_size=batch, max_size=batch))
    max_new = draw(st.integers(5, 23))  # the budget ends mid-path as often as not
    return seed, layers, kv_heads, window, prompt_lengths, max_new


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_greedy_tree_equals_plain_greedy(scenario):
    seed, layers, kv_heads, window, prompt_lengths, max_new = scenario
    model, params = random_model(seed, layers, 32, 4, kv_heads, window)
    rs = np.random.RandomState(seed)
    prompts = [rs.randint(0, VOCAB, size=n).tolist() for n in prompt_lengths]
    plain = generate(model, params, prompts, max_new_tokens=max_new)
    stop = plain[0].output_ids[len(plain[0].output_ids) // 2]  # a stop token that lands mid-tree
    plain = generate(model, params, prompts, max_new_tokens=max_new, stop_ids=[stop])
    tree = generate(model, params, prompts, max_new_tokens=max_new, stop_ids=[stop],
                    drafter=OracleTree(TREE, VOCAB), drafter_params=_histories(prompts, plain))
    for a, b in zip(plain, tree):
        assert b.output_ids == a.output_ids
        assert sum(b.accept_lengths) == len(b.output_ids)
        assert all(1 <= n <= max(TREE.depth) + 1 for n in b.accept_lengths)
    assert max(max(g.accept_lengths) for g in tree) >= 3 or max(len(g.output_ids) for g in tree) < 4


def test_encoder_decoder_tree_equals_plain_greedy():
    model, params = random_t5gemma(3, 2, 4.0)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    plain = generate(model, params, prompts, max_new_tokens=14)
    hist = np.zeros((3, 64), np.int32)
    for i, g in enumerate(plain):  # an encoder-decoder's history is the decoder's: its start token, then output
        row = [model.config.decoder_start_token_id] + g.output_ids
        hist[i, : len(row)] = row
    tree = generate(model, params, prompts, max_new_tokens=14, drafter=OracleTree(TREE, model.vocab_size),
                    drafter_params=jnp.asarray(hist))
    assert [g.output_ids for g in tree] == [g.output_ids for g in plain]
    assert max(max(g.accept_lengths) for g in tree) >= 3


def test_cache_after_tree_commits_equals_cache_after_plain():
    model, params = random_model(5, 2, 48, 4, 2, window=4)
    prompts = [[3, 4, 5, 6, 7], [8, 9]]
    plain = final_decode_state(model, params, prompts, 12, Autoregressive(), None)
    history = _histories(prompts, generate(model, params, prompts, max_new_tokens=12))
    fast = final_decode_state(model, params, prompts, 12, OracleTree(TREE, VOCAB), history)
    assert int(jnp.max(fast.accept_lengths)) >= 3  # paths through the tree were committed
    assert_committed_caches_equal(plain, fast)


# ---------------------------------------------------------------- Medusa heads


def random_heads(model, seed=0, num_heads=3, scale=0.5, kind=MEDUSA, num_layers=1, **config):
    """Heads of `kind` for `model` with every parameter perturbed (a trained head's stand-in)."""
    cfg = HeadsConfig(kind=kind, num_heads=num_heads, num_layers=num_layers, **target_fields(model), **config)
    heads = KINDS[kind](cfg)
    params = heads.init_params(jax.random.key(seed))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    params = tree.unflatten([x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    return LoadedHeads(heads, params, None, "random")


def _medusa(model, params, heads, batch, tree_size, sampling=SamplingConfig(), method="medusa"):
    return build_drafter(method, batch=batch, sampling=sampling, target_vocab=model.vocab_size, heads=heads,
                         target=(model, params), tree_size=tree_size)


# Hydra's heads read the drafted tokens; Hydra++'s also a prefix-attention layer with a cache of its own; the
# EAGLE drafter is autoregressive over features with its own cache and drafts a dynamic tree.
HEAD_KINDS = {"medusa": {}, "hydra": {"kind": "hydra", "num_layers": 2}, "hydra++": {"kind": "hydra", "attention_heads": 2},
              "eagle": {"kind": "eagle", "attention_heads": 2, "scale": 0.3}}


# The point-mass rule under sampling is one for every head kind: Hydra++ and EAGLE carry it. (EAGLE's greedy
# decoding equals plain greedy in test_eagle and test_train_heads too.)
@pytest.mark.parametrize("kind, temperature", [("medusa", 0.0), ("hydra", 0.0), ("hydra++", 0.7), ("eagle", 0.7)])
def test_wide_tree_and_batch_give_what_one_node_and_batch_one_give(kind, temperature):
    """SGLang's test: batch 3 with a 12-node tree, row by row with a 1-node tree, and plain decoding all
    emit the same tokens; under sampling too, since a point-mass tree emits the target's own draws."""
    model, params = random_model(7, 2, 32, 4, 2, scale=12.0 if temperature == 0 else 3.0)
    heads = random_heads(model, **HEAD_KINDS[kind])
    method = heads.heads.config.kind
    prompts = [[1, 2, 3, 4, 5], [7, 8], [3, 9, 3, 9, 3, 9, 3, 9, 3]]
    sampling = SamplingConfig(temperature=temperature)
    wide = generate(model, params, prompts, max_new_tokens=20, sampling=sampling, seed=[11, 12, 13],
                    drafter=(d := _medusa(model, params, heads, 3, 12, sampling, method))[0], drafter_params=d[1])
    for i, prompt in enumerate(prompts):
        d = _medusa(model, params, heads, 1, 1, sampling, method)
        one = generate(model, params, [prompt], max_new_tokens=20, sampling=sampling, seed=[11 + i],
                       drafter=d[0], drafter_params=d[1])[0]
        plain = generate(model, params, [prompt], max_new_tokens=20, sampling=sampling, seed=[11 + i])[0]
        assert wide[i].output_ids == one.output_ids == plain.output_ids


def test_heads_directory_round_trip_and_bad_heads(tmp_path):
    model, params = random_model(8, 2, 32, 4, 2)
    heads = random_heads(model, num_heads=2)
    save_heads(tmp_path / "heads", heads.heads, heads.params)
    loaded = load_heads(tmp_path / "heads", model)
    for a, b in zip(jax.tree_util.tree_leaves(heads.params), jax.tree_util.tree_leaves(loaded.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other, _ = random_model(8, 3, 48, 4, 2)
    with pytest.raises(CheckpointError, match="hidden size 32, but this target has 48"):
        load_heads(tmp_path / "heads", other)
    with pytest.raises(CheckpointError, match="no such heads directory"):
        load_heads(tmp_path / "missing", model)
    with pytest.raises(InputError, match="needs draft heads"):
        _medusa(model, params, None, 1, 4)
    with pytest.raises(InputError, match="tree size"):
        _medusa(model, params, heads, 1, 0)


def test_a_reduced_draft_vocabulary_drafts_only_its_ids():
    model, params = random_model(9, 2, 32, 4, 2)
    ids = jnp.asarray([3, 5, 8, 13, 21, 34], jnp.int32)
    heads = random_heads(model, draft_vocab=len(ids))
    heads = dataclasses.replace(heads, draft_ids=ids)
    drafter, dparams = _medusa(model, params, heads, 2, 8)
    start = Start(None, None, jnp.full((2,), 3), hidden=jax.random.normal(jax.random.key(0), (2, 3, 32)))
    state = drafter.init(dparams, jnp.zeros((2, 3), jnp.int32), None, 0, start)
    assert bool(jnp.all(state.ready))
    ctx = Context(jnp.zeros((2, 8), jnp.int32), jnp.full((2,), 3), jnp.full((2,), 3), jnp.zeros((2,), bool),
                  jnp.zeros((2,), jnp.uint32))
    draft, _ = drafter.propose(dparams, state, ctx)
    assert set(np.asarray(draft.tokens).ravel().tolist()) <= set(np.asarray(ids).tolist())
    plain = generate(model, params, [[1, 2, 3]], max_new_tokens=12)[0]
    d = _medusa(model, params, heads, 1, 8)
    assert generate(model, params, [[1, 2, 3]], max_new_tokens=12, drafter=d[0], drafter_params=d[1])[0].output_ids == plain.output_ids


def test_medusa_starts_from_the_hidden_state_before_the_last_prompt_token():
    model, params = random_model(10, 2, 32, 4, 2)
    tokens, lengths = map(jnp.asarray, _pad([[1, 2, 3, 4, 5], [6, 7], [8]]))
    start = model.start(params, tokens, lengths, 8)
    drafter, dparams = _medusa(model, params, random_heads(model), 3, 4)
    state = drafter.init(dparams, tokens, lengths, 8, start)
    b, p = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(p), (b, p))
    hidden = np.asarray(model.forward(params, tokens, positions, model.init_cache(b, p)).hidden)
    np.testing.assert_allclose(np.asarray(state.hidden)[:2], hidden[[0, 1], [3, 0]], atol=1e-5)
    assert np.asarray(state.ready).tolist() == [True, True, False]  # a one-token prompt has no state before it


def test_tree_size_for_the_best_expected_speedup():
    sure, useless = ((0.999, 0.0005),) * 3, ((1e-6, 1e-6),) * 3
    # Verifying w tokens costs 1 + 0.05 w one-token forwards (an accelerator), or w (a slow CPU).
    gentle = {w: 1 + 0.05 * w for w in (2, 3, 5, 9, 17, 33)}
    steep = {w: float(w) for w in (2, 3, 5, 9, 17, 33)}
    n, speedup = best_tree_size(sure, gentle, 0.1)
    # The three top guesses in a chain, then the likeliest fourth node (the first depth's second guess).
    assert n == 4 and speedup == pytest.approx((1 + 0.999 + 0.999**2 + 0.999**3 + 0.0005) / (1.25 + 0.1))
    assert best_tree_size(sure, steep, 0.1)[0] == 0  # 2 tokens per call at the cost of 2.1: plain wins
    assert best_tree_size(useless, gentle, 0.1)[0] == 0


def test_every_prefix_of_a_grown_tree_is_the_best_tree_of_its_size():
    """What lets the per-step sizing verify a prefix of a static tree (jaxspec/draft_sizing.py)."""
    accuracy = ((0.7, 0.2, 0.05), (0.6, 0.2, 0.1), (0.5, 0.3, 0.1))
    whole = grow(accuracy, 14)
    for n in range(1, 15):
        assert grow(accuracy, n) == StaticTree(whole.parents[:n], whole.depth[:n], whole.rank[:n])
    assert all(parent < node for node, parent in enumerate(whole.parents))
    assert whole.depth[:3] == (1, 2, 3)  # the likeliest chain first, not every depth-1 guess


def test_auto_tree_size_measures_the_cost_and_keeps_useless_heads_plain():
    """The drafting step is timed per tree size once and read back from disk after; heads that never guess
    right decode plainly whatever it costs."""
    model, params = random_model(11, 2, 32, 4, 2)
    heads = random_heads(model)
    useless = dataclasses.replace(heads, heads=MedusaHeads(dataclasses.replace(heads.heads.config, accuracy=((1e-6, 1e-6),) * 3)))
    said = []
    drafting = measured_drafting_cost("medusa", model, params, 1, said.append, heads=useless)
    # (Two sizes past the 14 nodes these 3 x 2 guesses can grow are one drafter, measured once.)
    assert len(said) == len(AUTO_TREE_SIZES) - 1 and all(drafting(n) > 0 for n in AUTO_TREE_SIZES)
    again = measured_drafting_cost("medusa", model, params, 1, said.append, heads=useless)
    assert len(said) == len(AUTO_TREE_SIZES) - 1
    assert [again(n) for n in AUTO_TREE_SIZES] == [drafting(n) for n in AUTO_TREE_SIZES]
    assert auto_tree_size(head_accuracy(useless), drafting, model, params, 1, "heads") == 0


@pytest.mark.parametrize("family", ["llama", "llama-tied", "t5gemma"])
def test_output_embedding_is_what_the_head_scores_against(family):
    """Heads project through model.output_embedding: the forward's logits must rank tokens as hidden · E."""
    if family == "t5gemma":
        model, params = random_t5gemma(4, 1, 1.0)
        start = model.start(params, jnp.asarray([[5, 6, 7]]), jnp.asarray([3]), 4)
        out = model.forward(params, start.tokens, jnp.zeros((1, 1), jnp.int32), start.cache)
    else:
        model, params = random_model(12, 1, 32, 4, 2, scale=1.0)
        if family == "llama-tied":
            model = dataclasses.replace(model, config=dataclasses.replace(model.config, tie_word_embeddings=True))
            params = {k: v for k, v in params.items() if k != "lm_head"}
        tokens = jnp.asarray([[3, 4, 5, 6]])
        out = model.forward(params, tokens, jnp.arange(4)[None], model.init_cache(1, 4))
    scores = np.asarray(out.hidden @ model.output_embedding(params).T)
    np.testing.assert_array_equal(np.argsort(scores, axis=-1)[..., -5:], np.argsort(np.asarray(out.logits), axis=-1)[..., -5:])
