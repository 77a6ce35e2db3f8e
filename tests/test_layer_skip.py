"""Self-speculation by layer skipping: the skipped forward against transformers with those sub-layers
removed, greedy exactness and cache equality through the loop, the skip-set search, saved sets."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxspec import SamplingConfig
from jaxspec.generate import generate
from jaxspec.context_vocab import ContextVocab
from jaxspec.drafters import Autoregressive
from jaxspec.errors import InputError
from jaxspec.methods import auto_sizing, build_drafter
from jaxspec.skip_search import draft_cost, expected_tokens, load_skip_set, save_skip_set, search_skip_set
from jaxspec.loading import load
from models.layer_skip import SkipSet, SkipSetError
from tests.hf_factory import VOCAB, make_hf_model
from tests.random_models import random_model
from tests.test_speculative import assert_committed_caches_equal, final_decode_state


class _Nothing(torch.nn.Module):
    """Stands in for a removed sub-layer: it adds nothing to the residual stream (an attention module's
    callers unpack (output, weights))."""

    def __init__(self, attention: bool):
        super().__init__()
        self.attention = attention

    def forward(self, hidden_states, *args, **kwargs):
        zeros = torch.zeros_like(hidden_states)
        return (zeros, None) if self.attention else zeros


def _jax_logits(lm, tokens, skip):
    t = jnp.asarray([tokens], jnp.int32)
    positions = jnp.arange(len(tokens), dtype=jnp.int32)[None, :]
    return np.asarray(lm.model.forward(lm.params, t, positions, lm.model.init_cache(1, len(tokens)), skip=skip).logits[0])


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_skipped_forward_equals_transformers_with_those_sublayers_removed(family, tmp_path):
    hf = make_hf_model(family, tmp_path)
    lm = load(tmp_path)
    n = lm.model.config.num_layers
    skip = SkipSet(attention=(1,), mlp=(0, n - 1))
    for i in skip.attention:
        hf.model.layers[i].self_attn = _Nothing(attention=True)
    for i in skip.mlp:
        hf.model.layers[i].mlp = _Nothing(attention=False)
    tokens = np.random.RandomState(0).randint(3, VOCAB, 11).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([tokens])).logits[0].numpy()
    np.testing.assert_allclose(_jax_logits(lm, tokens, skip), ref, atol=2e-4, rtol=1e-4)
    assert not np.allclose(_jax_logits(lm, tokens, None), ref, atol=1e-2)  # the skip changed something


def test_early_exit_equals_a_model_built_with_only_the_first_layers(tmp_path):
    make_hf_model("llama", tmp_path / "full", num_hidden_layers=3)
    lm = load(tmp_path / "full")
    # transformers keeps the first two layers of the checkpoint (and the shared final norm and head).
    import transformers

    short = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "full", num_hidden_layers=2).eval()
    tokens = np.random.RandomState(1).randint(3, VOCAB, 9).tolist()
    with torch.no_grad():
        ref = short(torch.tensor([tokens])).logits[0].numpy()
    exit_2 = SkipSet.parse("exit:2", 3)
    assert exit_2 == SkipSet((2,), (2,))
    np.testing.assert_allclose(_jax_logits(lm, tokens, exit_2), ref, atol=2e-4, rtol=1e-4)


def test_gates_score_what_the_static_skip_set_computes():
    model, params = random_model(0, 4, 32, 4, 2, window=4)
    skip = SkipSet((1, 3), (2,))
    tokens = jnp.asarray([[5, 9, 3, 7, 1, 2, 8]], jnp.int32)
    positions = jnp.arange(7)[None, :]
    static = model.forward(params, tokens, positions, model.init_cache(1, 7), skip=skip).logits
    gated = model.forward(params, tokens, positions, model.init_cache(1, 7), gates=jnp.asarray(skip.gates(4))).logits
    np.testing.assert_allclose(np.asarray(static), np.asarray(gated), atol=1e-5, rtol=1e-5)


# Ragged rows, longer than the sliding window of random_model(..., window=4) below.
RAGGED_PROMPTS = [[3, 4, 5, 6, 7, 3, 4, 5, 6], [8, 9], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]]


def assert_self_drafting_is_exact(model, params, drafter, dparams, k: int = 4) -> None:
    """Greedy output equals plain greedy output on RAGGED_PROMPTS with a stop token mid-draft and the
    budget, and the committed caches equal plain decoding's."""
    stop = generate(model, params, RAGGED_PROMPTS, max_new_tokens=20)[0].output_ids[7]
    plain = generate(model, params, RAGGED_PROMPTS, max_new_tokens=20, stop_ids=[stop])
    fast = generate(model, params, RAGGED_PROMPTS, max_new_tokens=20, stop_ids=[stop], drafter=drafter,
                    drafter_params=dparams)
    for a, b in zip(plain, fast):
        assert b.output_ids == a.output_ids
        assert sum(b.accept_lengths) == len(b.output_ids) and all(1 <= n <= k + 1 for n in b.accept_lengths)
    assert_committed_caches_equal(
        final_decode_state(model, params, RAGGED_PROMPTS, 12, Autoregressive(), None),
        final_decode_state(model, params, RAGGED_PROMPTS, 12, drafter, dparams),
    )


@pytest.mark.parametrize("spec", ["a1", "a1,m2", "exit:1", "m0,a2,m2"])
def test_greedy_layer_skip_equals_plain_greedy_and_leaves_the_plain_cache(spec):
    model, params = random_model(7, 3, 48, 4, 2, window=4, scale=3.0)
    drafter, dparams = build_drafter("layer-skip", batch=3, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                                     num_draft_tokens=4, target=(model, params), skip=SkipSet.parse(spec, 3))
    assert dparams is params  # the target's own params, not a copy
    assert_self_drafting_is_exact(model, params, drafter, dparams)


def test_context_vocab_holds_each_rows_distinct_tokens_in_order():
    v = ContextVocab.empty(2, 4, 10).add(jnp.asarray([[3, 5, 3, 7, 8, 9], [2, 2, 2, 2, 2, 2]]),
                                         jnp.asarray([[True] * 6, [True, True, False, True, True, True]]))
    np.testing.assert_array_equal(np.asarray(v.ids), [[3, 5, 7, 8], [2, 2, 2, 2]])
    np.testing.assert_array_equal(np.asarray(v.count), [4, 1])  # row 0 full: 9 was left out
    assert np.asarray(v.held).sum(axis=1).tolist() == [4, 1]
    full = np.asarray(v.full_logits(jnp.asarray([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])))
    assert full[0, 7] == 3.0 and full[1, 2] == 5.0 and np.isneginf(full[0, 9]) and np.isneginf(full[1, 3])


def test_a_head_over_some_ids_scores_what_the_full_head_scores_there():
    model, params = random_model(1, 2, 32, 4, 2)
    tokens = jnp.asarray([[5, 9, 3], [1, 2, 3]], jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(3), (2, 3))
    ids = jnp.asarray([[0, 7, 63], [9, 9, 1]], jnp.int32)
    full = model.forward(params, tokens, positions, model.init_cache(2, 3)).logits
    some = model.forward(params, tokens, positions, model.init_cache(2, 3), vocab=ids).logits
    np.testing.assert_allclose(np.asarray(some), np.asarray(jnp.take_along_axis(full, ids[:, None, :], axis=2)),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("draft_vocab", [3, 24])
def test_drafting_over_the_context_vocabulary_stays_exact(draft_vocab):
    model, params = random_model(7, 3, 48, 4, 2, window=4, scale=3.0)
    prompts = [[3, 4, 5, 6, 7, 3, 4, 5, 6], [8, 9], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]]
    plain = generate(model, params, prompts, max_new_tokens=20)
    drafter, dparams = build_drafter("layer-skip", batch=3, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                                     num_draft_tokens=4, target=(model, params), skip=SkipSet((1,)),
                                     draft_vocab=draft_vocab)
    assert drafter.draft_vocab == draft_vocab
    fast = generate(model, params, prompts, max_new_tokens=20, drafter=drafter, drafter_params=dparams)
    assert [r.output_ids for r in fast] == [r.output_ids for r in plain]


def test_skipping_an_identity_layer_drafts_exactly():
    """A layer whose output projections are zero adds nothing: skipping it, every draft is accepted (less the
    confidence stop, off here)."""
    model, params = _with_identity_layers(random_model(2, 3, 32, 4, 2, scale=3.0), (1,))
    drafter, _ = build_drafter("layer-skip", batch=1, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                               num_draft_tokens=3, target=(model, params), skip=SkipSet((1,), (1,)))
    drafter = type(drafter)(drafter.model, 3, SamplingConfig(), min_confidence=0.0)
    out = generate(model, params, [[1, 2, 3]], max_new_tokens=16, drafter=drafter, drafter_params=params)[0]
    assert out.accept_lengths == [4, 4, 4, 4]


def _with_identity_layers(model_params, layers):
    model, params = model_params
    params = jax.tree_util.tree_map(lambda x: x, params)  # a new tree: the caller's is untouched
    for i in layers:
        params[f"layers_{i}"]["self_attn"]["o_proj"]["kernel"] *= 0.0
        params[f"layers_{i}"]["mlp"]["down_proj"]["kernel"] *= 0.0
    return model, params


def test_search_finds_the_layers_that_do_nothing_within_its_budget():
    model, params = _with_identity_layers(random_model(0, 6, 32, 4, 2, scale=3.0), (2, 3))
    rs = np.random.RandomState(0)
    prompts = [rs.randint(0, 64, 40).tolist(), rs.randint(0, 64, 20).tolist()]
    result = search_skip_set(model, params, prompts, num_draft_tokens=4, budget=30)
    assert result.skip == SkipSet((2, 3), (2, 3)) and result.agreement == 1.0
    assert result.evaluations <= 30
    # Two of six equal layers skipped (the head of a 64-token vocabulary is small next to them).
    assert 0.6 < result.draft_cost < 0.75
    assert result.expected_speedup == pytest.approx(expected_tokens(1.0, 4) / (4 * result.draft_cost + 1.0))
    tight = search_skip_set(model, params, prompts, num_draft_tokens=4, budget=3)
    assert tight.evaluations <= 3


def test_search_keeps_a_set_only_when_it_beats_skipping_nothing():
    """Skipping nothing drafts exactly at the full cost: E = K + 1 over K r + c = K + 1, i.e. 1.0x."""
    model, params = random_model(4, 3, 32, 4, 2, scale=6.0)
    result = search_skip_set(model, params, [list(range(30))], num_draft_tokens=4, verify_cost=1.0, budget=8)
    assert result.evaluations <= 8
    assert (len(result.skip) == 0 and result.expected_speedup == 1.0) or result.expected_speedup > 1.0


def test_auto_sizing_prices_a_self_draft_by_the_weights_it_reads(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXSPEC_CACHE", str(tmp_path))
    model, params = random_model(0, 4, 32, 4, 2)
    skip = SkipSet((1, 2), (2,))
    drafter, _ = build_drafter("layer-skip", batch=1, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                               num_draft_tokens=4, target=(model, params), skip=skip, draft_vocab=8)
    sizing = auto_sizing("layer-skip", "auto", drafter, model, params, 1)
    assert sizing.max_drafts == 4
    assert sizing.draft_cost == pytest.approx(draft_cost(model, params, skip, 8))
    assert draft_cost(model, params, skip, 8) < draft_cost(model, params, skip) < draft_cost(model, params, SkipSet()) == 1.0


def test_expected_tokens():
    assert expected_tokens(0.0, 4) == 1.0 and expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)


def test_saved_sets_come_back_for_their_model_only(tmp_path):
    model, params = random_model(0, 4, 32, 4, 2)
    path = tmp_path / "skip.json"
    save_skip_set(path, model, SkipSet((1,), (2,)))
    assert load_skip_set(path, model) == SkipSet((1,), (2,))
    assert json.loads(path.read_text())["skip"] == "a1,m2"
    other, _ = random_model(0, 3, 32, 4, 2)
    with pytest.raises(InputError, match="chosen for .* not this model"):
        load_skip_set(path, other)
    with pytest.raises(InputError, match="cannot read skip set"):
        load_skip_set(tmp_path / "missing.json", model)


@pytest.mark.parametrize("text, message", [
    ("a1,x2", "bad skip set item 'x2'"),
    ("a7", r"names layers \[7\], but the model has layers 0..3"),
    ("exit:4", r"exit layer must be in \[1, 4\)"),
    ("exit:0", r"exit layer must be in \[1, 4\)"),
    ("exit:x", "bad exit layer 'x'"),
    ("a0,a1,a2,a3,m0,m1,m2,m3", "skips every sub-layer"),
])
def test_bad_skip_sets_say_what_is_wrong(text, message):
    with pytest.raises(SkipSetError, match=message):
        SkipSet.parse(text, 4)


def test_layer_skip_needs_a_decoder_only_target():
    from tests.random_models import random_t5gemma

    model, params = random_t5gemma(0, 2, 1.0)
    with pytest.raises(InputError, match="needs a decoder-only model"):
        build_drafter("layer-skip", batch=1, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                      num_draft_tokens=2, target=(model, params), skip=SkipSet((0,)), target_encoder_decoder=True)


def test_the_context_vocabulary_score_of_a_short_prompt_reads_its_first_half():
    """A prompt shorter than the search window: the draft vocabulary comes from the first half of the row
    (its tokens and the full model's predictions there) and the window is the second half, so with every
    sub-layer kept the score is the share of second-half predictions found in that vocabulary."""
    from jaxspec.skip_search import agreement_scorer

    model, params = random_model(3, 4, 32, 4, 2, scale=4.0)
    row = [5, 9, 3, 7, 1, 2, 8, 5, 9, 3, 7, 1, 4, 6]
    score = agreement_scorer(model, params, [row], window=32, draft_vocab=64)
    predicted = np.asarray(jnp.argmax(model.sequence_logits(params, jnp.asarray([row])), axis=-1))[0]
    half = len(row) // 2
    vocab = set(row[:half]) | set(predicted[:half].tolist())
    want = np.mean([predicted[i] in vocab for i in range(half, len(row))])
    assert want > 0
    assert score(np.ones((2, 4), np.float32)) == pytest.approx(want)
