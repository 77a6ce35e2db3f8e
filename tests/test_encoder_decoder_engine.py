"""The one decode loop on encoder-decoder models: the prompt is the encoder's input, the loop sees decoder
tokens only. Driven by a toy model whose output distribution is known in closed form (tests/toy_models.py),
so exactness and losslessness are checked against the truth, not against another implementation."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxspec import SamplingConfig
from jaxspec.generate import generate
from jaxspec.drafters.draft_model import DraftModel
from jaxspec.drafters.prompt_lookup import PromptLookup
from jaxspec.errors import InputError
from jaxspec.methods import build_drafter
from jaxspec.sampling import target_distribution
from tests.random_models import noisy_copy, random_t5gemma
from tests.toy_models import ToyEncoderDecoder, ToyModel, random_table

V = 12


def toy_params(seed: int, vocab: int = V, sharpness: float = 1.5) -> dict:
    return {"table": random_table(seed, vocab, sharpness), "source_table": random_table(seed + 100, vocab, sharpness)}


def noisy(params: dict, seed: int, noise: float = 0.5) -> dict:
    """A draft that agrees with the target often but not always."""
    return {k: v + random_table(seed + i, v.shape[0], noise) for i, (k, v) in enumerate(sorted(params.items()))}


def greedy_chain(params: dict, first_source_token: int, start: int, n: int) -> list[int]:
    """The closed-form greedy decode of the toy: argmax of table[prev] + source_table[first source token]."""
    logits = np.asarray(params["table"]) + np.asarray(params["source_table"])[first_source_token]
    out, prev = [], start
    for _ in range(n):
        prev = int(np.argmax(logits[prev]))
        out.append(prev)
    return out


def test_plain_greedy_decodes_the_decoder_side_from_the_start_token():
    model, params = ToyEncoderDecoder(V), toy_params(0)
    sources = [[3, 1, 4, 1, 5], [9], [2, 7]]
    out = generate(model, params, sources, max_new_tokens=10)
    for src, r in zip(sources, out):
        assert r.prompt_ids == src
        assert r.output_ids == greedy_chain(params, src[0], model.start_token, 10)
        assert r.accept_lengths == [1] * 10


@pytest.mark.parametrize("method", ["draft-model", "prompt-lookup"])
def test_greedy_speculative_equals_plain_greedy(method):
    model, params = ToyEncoderDecoder(V), toy_params(1)
    firsts = [3, 9, 2, 5]
    # Each source continues with its own greedy output, so prompt lookup finds what to copy in the source.
    sources = [[f] + greedy_chain(params, f, model.start_token, 12)[: 4 + 3 * i] for i, f in enumerate(firsts)]
    plain = generate(model, params, sources, max_new_tokens=20, stop_ids=[7])
    if method == "prompt-lookup":
        drafter, dparams = PromptLookup(4, 2), None
    else:
        drafter, dparams = DraftModel(ToyEncoderDecoder(V), 3, SamplingConfig()), noisy(params, 2)
    spec = generate(model, params, sources, max_new_tokens=20, stop_ids=[7], drafter=drafter, drafter_params=dparams)
    assert [r.output_ids for r in spec] == [r.output_ids for r in plain]
    assert max(max(r.accept_lengths) for r in spec) > 1  # drafts were accepted
    assert sum(r.target_calls for r in spec) < sum(r.target_calls for r in plain)


N_ROWS, NEW, TOY_V = 30_000, 3, 5


@pytest.mark.parametrize("method", ["autoregressive", "draft-model", "prompt-lookup"])
def test_sampled_sequences_follow_the_target_exactly(method):
    """The first 3 decoder tokens of 30 000 rows against the closed-form Markov chain of each row's source."""
    cfg = SamplingConfig(temperature=1.0, top_k=4)
    model, params = ToyEncoderDecoder(TOY_V), toy_params(3, TOY_V)
    sources = {0: [0, 1, 2, 0, 1, 2], 3: [3, 4, 0, 3, 4, 0]}  # two kinds of rows; the sources repeat themselves
    rows = [sources[k] for k in (0, 3)] * (N_ROWS // 2)
    if method == "autoregressive":
        drafter, dparams = build_drafter(method, batch=N_ROWS, sampling=cfg, target_vocab=TOY_V)
    elif method == "prompt-lookup":
        drafter, dparams = PromptLookup(3, 1), None
    else:
        drafter, dparams = DraftModel(ToyEncoderDecoder(TOY_V), 2, cfg), noisy(params, 4)
    out = generate(model, params, rows, max_new_tokens=NEW, sampling=cfg, seed=11, drafter=drafter, drafter_params=dparams)
    if method != "autoregressive":
        assert np.mean([max(r.accept_lengths) for r in out]) > 1.2
    for first in sources:
        t = np.asarray(
            target_distribution(params["table"] + params["source_table"][first], cfg), np.float64
        )
        seqs = list(itertools.product(range(TOY_V), repeat=NEW))
        want = np.array([t[0, a] * t[a, b] * t[b, c] for a, b, c in seqs])
        got = np.zeros(len(seqs))
        index = {s: i for i, s in enumerate(seqs)}
        for r in out:
            if r.prompt_ids[0] == first:
                got[index[tuple(r.output_ids)]] += 1
        assert got[want == 0].sum() == 0
        keep = want * got.sum() >= 5
        obs, exp = np.append(got[keep], got[~keep].sum()), np.append(want[keep], want[~keep].sum()) * got.sum()
        obs, exp = obs[exp > 0], exp[exp > 0]
        assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4
        tv = 0.5 * np.abs(got / got.sum() - want).sum()
        assert tv < 0.03, tv


def test_a_draft_of_the_other_kind_is_one_clear_error():
    with pytest.raises(InputError, match="the draft is a decoder-only model but the target is an encoder-decoder one"):
        build_drafter(
            "draft-model", batch=1, sampling=SamplingConfig(), target_vocab=V, target_encoder_decoder=True,
            draft_model=ToyModel(V), draft_params=None,
        )
    with pytest.raises(InputError, match="the draft is an encoder-decoder model but the target is a decoder-only one"):
        build_drafter("draft-model", batch=1, sampling=SamplingConfig(), target_vocab=V, draft_model=ToyEncoderDecoder(V))


def test_the_source_is_searched_by_prompt_lookup_but_is_not_the_decoder_prefix():
    """Prompt lookup drafts from the encoder input: with the greedy continuation in the source, the first
    step already accepts all K drafts."""
    model, params = ToyEncoderDecoder(V), toy_params(5)
    chain = greedy_chain(params, 4, model.start_token, 10)
    source = [4, model.start_token] + chain  # "start, then the chain" is findable from the start token on
    out = generate(model, params, [source], max_new_tokens=9, drafter=PromptLookup(4, 1))[0]
    assert out.output_ids == chain[:9]
    assert out.accept_lengths[0] == 5
    assert jnp.asarray(out.output_ids).shape == (9,)


# ---------------------------------------------------------------- a real encoder-decoder (T5Gemma)


@pytest.mark.parametrize("seed", [0, 1])
def test_t5gemma_greedy_speculative_equals_plain_greedy(seed):
    """Ragged sources longer than the sliding window, a stop token mid-way, both speculative methods."""
    model, params = random_t5gemma(seed, 2, scale=12.0)
    rs = np.random.RandomState(seed)
    sources = [(rs.randint(3, 48, size=n // 2).tolist() * 2)[:n] for n in (13, 5, 9)]
    plain = generate(model, params, sources, max_new_tokens=16)
    stop = plain[0].output_ids[8]
    plain = generate(model, params, sources, max_new_tokens=16, stop_ids=[stop])
    draft, dparams = random_t5gemma(seed, 1, scale=12.0)
    for drafter, dp in (
        (DraftModel(model, 3, SamplingConfig()), noisy_copy(params, seed)),
        (DraftModel(draft, 3, SamplingConfig()), dparams),
        (PromptLookup(4, 2), None),
    ):
        spec = generate(model, params, sources, max_new_tokens=16, stop_ids=[stop], drafter=drafter, drafter_params=dp)
        assert [r.output_ids for r in spec] == [r.output_ids for r in plain]
        assert all(sum(r.accept_lengths) == r.new_tokens for r in spec)


def test_t5gemma_speculative_sampling_matches_plain_sampling():
    """First 3 decoder tokens over 5000 rows: draft-model sampling vs plain sampling, two-sample chi-square."""
    model, params = random_t5gemma(2, 2, scale=4.0)
    cfg, rows, source = SamplingConfig(temperature=1.0, top_p=0.95), 5000, [5, 9, 14, 5, 9, 14, 22]
    plain = generate(model, params, [source] * rows, max_new_tokens=3, sampling=cfg, seed=1)
    spec = generate(
        model, params, [source] * rows, max_new_tokens=3, sampling=cfg, seed=rows + 1,  # seeds disjoint from plain's
        drafter=DraftModel(model, 2, cfg), drafter_params=noisy_copy(params, 3),
    )
    assert np.mean([len(r.accept_lengths) for r in spec]) < 2.8  # drafts were accepted
    for pos in range(3):
        a = np.bincount([r.output_ids[pos] for r in plain], minlength=48)
        b = np.bincount([r.output_ids[pos] for r in spec], minlength=48)
        keep = (a + b) >= 10
        table = np.stack([np.append(a[keep], a[~keep].sum()), np.append(b[keep], b[~keep].sum())])
        table = table[:, table.sum(0) > 0]
        assert stats.chi2_contingency(table).pvalue > 1e-4, f"position {pos}"
