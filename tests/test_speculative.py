"""Speculative decoding through the one loop: greedy exactness, lossless sampling, cache equality."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy import stats

from jaxspec import SamplingConfig
from jaxspec.generate import generate
from jaxspec.decode_loop import DecodeSpec, decode_jit, run_decode
from jaxspec.stopping import stop_table
from jaxspec.drafters import Autoregressive
from jaxspec.drafters.draft_model import AdaptiveDraft, DraftModel
from jaxspec.drafters.prompt_lookup import PromptLookup
from jaxspec.generate import _pad, bucket
from jaxspec.methods import build_drafter
from models.layer_skip import SkipSet
from tests.random_models import VOCAB, noisy_copy, perturbed, random_model
from tests.toy_models import ToyModel, random_table

# ---------------------------------------------------------------- greedy exactness


@st.composite
def scenarios(draw):
    seed = draw(st.integers(0, 10_000))
    layers = draw(st.integers(1, 3))
    hidden = draw(st.sampled_from([32, 48]))
    kv_heads = draw(st.sampled_from([1, 2, 4]))
    window = draw(st.sampled_from([None, None, 4]))
    batch = draw(st.integers(1, 4))
    prompt_lengths = draw(st.lists(st.integers(1, 20), min_size=batch, max_size=batch))
    method = draw(st.sampled_from([
        "draft-model", "draft-model-adaptive", "draft-model-small", "prompt-lookup", "jacobi", "speculative-jacobi",
        "lookahead", "layer-skip", "early-exit",
    ]))
    k = draw(st.integers(1, 5))
    return seed, layers, hidden, kv_heads, window, prompt_lengths, method, k


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
# Sliding windows under the methods the draws above may miss.
@example((3, 2, 32, 2, 4, [9, 3, 14], "lookahead", 4))
@example((5, 2, 48, 1, 4, [2, 17], "speculative-jacobi", 3))
@example((6, 3, 32, 2, 4, [12, 1, 7], "layer-skip", 5))
@example((8, 1, 48, 2, 4, [1, 15], "early-exit", 4))
def test_greedy_speculative_equals_plain_greedy(scenario):
    seed, layers, hidden, kv_heads, window, prompt_lengths, method, k = scenario
    if method == "early-exit":
        layers = max(layers, 2)  # an exit needs a layer after it
    target, params = random_model(seed, layers, hidden, 4, kv_heads, window)
    rs = np.random.RandomState(seed)
    # Prompts that repeat themselves give prompt lookup something to find.
    prompts = [(rs.randint(0, VOCAB, size=max(1, n // 2)).tolist() * 2)[:n] for n in prompt_lengths]
    plain = generate(target, params, prompts, max_new_tokens=24)
    stop = plain[0].output_ids[len(plain[0].output_ids) // 2]
    plain = generate(target, params, prompts, max_new_tokens=24, stop_ids=[stop])

    if method == "prompt-lookup":
        drafter, dparams = PromptLookup(k, 3), None
    elif method in ("jacobi", "speculative-jacobi", "lookahead"):
        drafter, dparams = build_drafter(method, batch=len(prompts), sampling=SamplingConfig(), target_vocab=VOCAB,
                                         num_draft_tokens=max(k, 2), levels=min(max(k, 2), 3), pool_size=2)
        k = drafter.num_draft_tokens  # a path is at most the tree's size deep
    elif method == "layer-skip":
        skip = SkipSet((seed % layers,), ((seed + 1) % layers,) if layers > 1 else ())
        drafter, dparams = build_drafter(method, batch=len(prompts), sampling=SamplingConfig(), target_vocab=VOCAB,
                                         num_draft_tokens=k, target=(target, params), skip=skip)
    elif method == "early-exit":
        drafter, dparams = build_drafter(method, batch=len(prompts), sampling=SamplingConfig(), target_vocab=VOCAB,
                                         num_draft_tokens=k, target=(target, params), exit_layer=1 + seed % (layers - 1))
        dparams = dict(dparams, adapter=perturbed(dparams["adapter"], seed, 0.1))  # a trained adapter's stand-in
    elif method == "draft-model-small":
        small, small_params = random_model(seed + 1, 1, 32, 2, 1)
        drafter, dparams = DraftModel(small, k, SamplingConfig()), small_params
    else:
        adaptive = AdaptiveDraft(0.5, 0.6) if method == "draft-model-adaptive" else None
        drafter, dparams = DraftModel(target, k, SamplingConfig(), adaptive), noisy_copy(params, seed, 0.3)
    spec = generate(
        target, params, prompts, max_new_tokens=24, stop_ids=[stop], drafter=drafter, drafter_params=dparams
    )
    for a, b in zip(plain, spec):
        assert b.output_ids == a.output_ids
        assert sum(b.accept_lengths) == len(b.output_ids)
        assert all(1 <= n <= k + 1 for n in b.accept_lengths)


def test_rows_accept_different_lengths_in_one_batch():
    target, params = random_model(3, 2, 48, 4, 2)
    prompts = [[5, 6, 7, 8, 5, 6, 7], [9], [20, 21, 22, 23, 24, 25], [40, 41]]
    drafter = DraftModel(target, 4, SamplingConfig())
    out = generate(target, params, prompts, max_new_tokens=30, drafter=drafter, drafter_params=noisy_copy(params, 0, 0.3))
    plain = generate(target, params, prompts, max_new_tokens=30)
    assert [r.output_ids for r in out] == [r.output_ids for r in plain]
    # Rows took different numbers of target calls and accepted different lengths.
    assert len({r.target_calls for r in out}) > 1
    assert any(len({r.accept_lengths[i] for r in out}) > 1 for i in range(min(r.target_calls for r in out)))
    assert max(max(r.accept_lengths) for r in out) > 2


def test_a_perfect_draft_is_always_accepted():
    target, params = random_model(4, 2, 32, 4, 4)
    drafter = DraftModel(target, 3, SamplingConfig())
    out = generate(target, params, [[1, 2, 3]], max_new_tokens=16, drafter=drafter, drafter_params=params)[0]
    assert out.accept_lengths == [4, 4, 4, 4]


def final_decode_state(model, params, prompts, max_new: int, drafter, dparams, sizing=None):
    """The loop's state once every row is done (greedy, no stop tokens; drafts sized by `sizing`, if any)."""
    tokens, lengths = map(jnp.asarray, _pad(prompts))
    stops = jnp.asarray(stop_table([], [], bucket))
    return jax.jit(run_decode, static_argnums=(0, 1, 2))(
        model, drafter, DecodeSpec(max_new, SamplingConfig(), sizing=sizing), params, dparams, tokens, lengths, stops,
        jnp.zeros((len(prompts),), jnp.uint32),
    )


def assert_same_text(state, plain):
    """Two final loop states hold the same tokens (their histories' slack past them differs)."""
    np.testing.assert_array_equal(np.asarray(state.seq_len), np.asarray(plain.seq_len))
    for row, n in enumerate(np.asarray(plain.seq_len)):
        np.testing.assert_array_equal(np.asarray(state.history[row, :n]), np.asarray(plain.history[row, :n]))


def assert_committed_caches_equal(plain, fast):
    """Same lengths, and each row's committed K/V equal (the caches' slack past them differs)."""
    np.testing.assert_array_equal(np.asarray(plain.seq_len), np.asarray(fast.seq_len))
    for b, n in enumerate(np.asarray(plain.seq_len) - 1):
        for a, c in zip(plain.cache.keys, fast.cache.keys):
            np.testing.assert_allclose(np.asarray(a[b, ..., :n]), np.asarray(c[b, ..., :n]), atol=2e-5, rtol=1e-5)
        for a, c in zip(plain.cache.values, fast.cache.values):
            np.testing.assert_allclose(np.asarray(a[b, :, :n]), np.asarray(c[b, :, :n]), atol=2e-5, rtol=1e-5)


def test_the_compiled_loop_chooses_its_verify_width_without_a_conditional():
    """Each verify width runs in a one-trip while loop (jaxspec/decode_loop.py, verify_forward): a `lax.switch`
    over the widths made XLA copy every layer's cache out of the taken branch on every step, plain steps
    included (26 cache-shaped copies in this program, none now beyond the cache's zero fill)."""
    target, params = random_model(5, 2, 48, 4, 2)
    drafter, drafter_params = build_drafter("prompt-lookup", batch=2, sampling=SamplingConfig(), target_vocab=VOCAB,
                                            num_draft_tokens=8)
    prompts = jnp.tile(jnp.arange(1, 17, dtype=jnp.int32), (2, 1))
    program = decode_jit.lower(
        target, drafter, DecodeSpec(8, SamplingConfig(), None, None), params, drafter_params, prompts,
        jnp.asarray([16, 12], jnp.int32), jnp.asarray(stop_table((), (), bucket)), jnp.zeros((2,), jnp.uint32),
    ).compile().as_text()
    assert " conditional(" not in program


def test_cache_after_speculative_equals_cache_after_plain():
    target, params = random_model(5, 2, 48, 4, 2, window=4)
    prompts = [[3, 4, 5, 6, 7], [8, 9]]
    plain = final_decode_state(target, params, prompts, 12, Autoregressive(), None)
    fast = final_decode_state(target, params, prompts, 12, DraftModel(target, 4, SamplingConfig()), noisy_copy(params, 1, 0.3))
    assert_committed_caches_equal(plain, fast)


# ---------------------------------------------------------------- lossless sampling, end to end

TOY_V = 5
N_ROWS = 30_000
NEW = 3


def _markov_joint(table, first, cfg):
    """Exact distribution of the first NEW tokens after token `first` under the toy target."""
    from jaxspec.sampling import target_distribution

    t = np.asarray(target_distribution(table, cfg), np.float64)
    joint = {}
    for seq in itertools.product(range(TOY_V), repeat=NEW):
        prob, prev = 1.0, first
        for tok in seq:
            prob *= t[prev, tok]
            prev = tok
        joint[seq] = prob
    return joint


@pytest.mark.parametrize(
    "method",
    ["autoregressive", "draft-model", "draft-model-adaptive", "prompt-lookup"],
)
@pytest.mark.parametrize("cfg", [SamplingConfig(temperature=1.0), SamplingConfig(temperature=0.8, top_k=3)], ids=str)
def test_sampled_sequences_follow_the_target_exactly(method, cfg):
    """Joint distribution of the first 3 tokens over 30 000 rows, chi-square against the closed form."""
    table = random_table(0, TOY_V)
    target = ToyModel(TOY_V)
    prompt = [0, 1, 2, 0, 1, 2, 0, 1]  # repeats, so prompt lookup drafts
    if method == "autoregressive":
        drafter, dparams = build_drafter(method, batch=N_ROWS, sampling=cfg, target_vocab=TOY_V)
    elif method == "prompt-lookup":
        drafter, dparams = PromptLookup(3, 2), None
    else:
        adaptive = AdaptiveDraft(0.4, 0.7) if method.endswith("adaptive") else None
        drafter, dparams = DraftModel(ToyModel(TOY_V), 2, cfg, adaptive), random_table(1, TOY_V)
    out = generate(target, table, [prompt] * N_ROWS, max_new_tokens=NEW, sampling=cfg, seed=7, drafter=drafter, drafter_params=dparams)
    if method != "autoregressive":
        assert np.mean([max(r.accept_lengths) for r in out]) > 1.2  # drafts were really accepted
    joint = _markov_joint(table, prompt[-1], cfg)
    seqs = list(joint)
    index = {s: i for i, s in enumerate(seqs)}
    counts = np.bincount([index[tuple(r.output_ids)] for r in out], minlength=len(seqs))
    expected = np.array([joint[s] for s in seqs]) * N_ROWS
    assert counts[expected == 0].sum() == 0
    keep = expected >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4
    # Per-position marginals: a 2% total-variation error would fail this bound.
    for pos in range(NEW):
        marg = np.bincount([r.output_ids[pos] for r in out], minlength=TOY_V) / N_ROWS
        want = np.zeros(TOY_V)
        for s, prob in joint.items():
            want[s[pos]] += prob
        assert 0.5 * np.abs(marg - want).sum() < 0.012


def test_speculative_sampling_matches_plain_sampling_on_a_real_model():
    """First 4 tokens of a random transformer: draft-model sampling vs plain sampling, two-sample chi-square."""
    target, params = random_model(6, 2, 32, 4, 2, scale=4.0)
    cfg = SamplingConfig(temperature=1.0, top_p=0.9)
    prompt, rows = [3, 17, 29], 6000
    plain = generate(target, params, [prompt] * rows, max_new_tokens=4, sampling=cfg, seed=1)
    drafter = DraftModel(target, 3, cfg)
    spec = generate(
        target, params, [prompt] * rows, max_new_tokens=4, sampling=cfg, seed=rows + 1,  # seeds disjoint from plain's
        drafter=drafter, drafter_params=noisy_copy(params, 2, 0.3),
    )
    assert np.mean([len(r.accept_lengths) for r in spec]) < 3.5  # speculation really happened
    for pos in range(4):
        a = np.bincount([r.output_ids[pos] for r in plain], minlength=VOCAB)
        b = np.bincount([r.output_ids[pos] for r in spec], minlength=VOCAB)
        keep = (a + b) >= 10
        table = np.stack([np.append(a[keep], a[~keep].sum()), np.append(b[keep], b[~keep].sum())])
        table = table[:, table.sum(0) > 0]
        assert stats.chi2_contingency(table).pvalue > 1e-4, f"position {pos}"
