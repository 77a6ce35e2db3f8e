"""Jacobi, speculative Jacobi and lookahead decoding: exact under greedy, lossless under sampling, and the
fixed points Jacobi iteration must reach in the number of steps theory gives.

Fixed points, on toy-logit models (tests/toy_models.py) whose greedy continuation is a known cycle:
- order 0 (the next token depends on the position only): one iteration makes every guess exact, so a
  step with wrong guesses emits 1 token and the next accepts the whole window, W + 1 tokens; the
  guesses for positions the forward did not reach are wrong again, so the schedule is 1, W + 1, 1, ...
- order 1 (the next token depends on the previous one): a guess becomes exact one iteration after the
  guess before it, so Jacobi from wrong guesses needs W steps for W tokens: every step emits exactly 1,
  the bound being tight. Lookahead's pool then holds the cycle's n-grams after a few steps, and every
  step accepts at least a whole n-gram: N tokens or more a step.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import SamplingConfig, methods
from jaxspec.generate import generate
from jaxspec.drafters.lookahead import Lookahead, topology
from jaxspec.methods import build_drafter
from models import ModelOutput
from tests.random_models import VOCAB, random_model, random_t5gemma
from tests.toy_models import ToyModel

METHODS = ("jacobi", "speculative-jacobi", "lookahead")
TOY_V, CYCLE = 16, 7  # cycle tokens 0..6; prompts use the others


def _drafter(method, vocab, sampling=SamplingConfig(), window=4, batch=3):
    return build_drafter(method, batch=batch, sampling=sampling, target_vocab=vocab, num_draft_tokens=window,
                         levels=3, pool_size=3)


def _cycle_table(sharp=20.0):
    """Row x's argmax is x + 1 around the cycle; every other token leads into it."""
    table = np.zeros((TOY_V, TOY_V), np.float32)
    for x in range(TOY_V):
        table[x, (x + 1) % CYCLE] = sharp
    return jnp.asarray(table)


@dataclasses.dataclass(frozen=True)
class PositionToy(ToyModel):
    """Order 0: the logits after position t are table[t mod CYCLE], whatever the tokens: position t + 1
    holds (t + 1) mod CYCLE."""

    def forward(self, params, tokens, positions, cache, window_mask=None) -> ModelOutput:
        return ModelOutput(params[positions % CYCLE], jnp.zeros(tokens.shape + (1,)), cache)


def test_lookahead_tree_puts_each_level_under_the_one_before():
    parents, window_nodes, pool_nodes = topology(window=3, levels=3, pool=2)
    node = {("w", l, k): window_nodes[l * 3 + k] for l in range(2) for k in range(3)}
    node |= {("p", g, d): pool_nodes[g * 2 + d] for g in range(2) for d in range(2)}
    up = {v: parents[v] for v in node.values()}
    assert up[node["w", 0, 0]] == -1 and up[node["w", 0, 2]] == node["w", 0, 1]
    assert up[node["w", 1, 0]] == node["w", 0, 0] and up[node["w", 1, 2]] == node["w", 0, 2]
    assert up[node["p", 1, 0]] == -1 and up[node["p", 1, 1]] == node["p", 1, 0]
    depth = [0] * len(parents)
    for i, p in enumerate(parents):
        assert p < i  # sorted: parents first
        depth[i] = 1 if p < 0 else depth[p] + 1
    assert depth == sorted(depth) and len(parents) == (3 + 2) * 2


@pytest.mark.parametrize("method", METHODS)
def test_encoder_decoder_greedy_equals_plain_greedy(method):
    """Ragged batch, a stop token that ends a row early, and the budget ending mid-step. (Decoder-only
    models, with and without sliding windows, are among test_speculative's random scenarios.)"""
    model, params = random_t5gemma(7, 2, 8.0)
    rs = np.random.RandomState(1)
    prompts = [rs.randint(0, model.vocab_size, size=n).tolist() for n in (9, 2, 14)]
    plain = generate(model, params, prompts, max_new_tokens=30)
    stop = plain[1].output_ids[12]
    plain = generate(model, params, prompts, max_new_tokens=30, stop_ids=[stop])
    drafter, dparams = _drafter(method, model.vocab_size)
    fast = generate(model, params, prompts, max_new_tokens=30, stop_ids=[stop], drafter=drafter, drafter_params=dparams)
    for a, b in zip(plain, fast):
        assert b.output_ids == a.output_ids
        assert sum(b.accept_lengths) == len(b.output_ids)
    assert max(max(g.accept_lengths) for g in fast) >= 2


@pytest.mark.parametrize("method", ["jacobi", "lookahead"])
def test_point_mass_guesses_emit_what_plain_sampling_emits(method):
    """The point-mass rules take the target's own draw at each position: a row's tokens are plain sampling's."""
    model, params = random_model(22, 2, 32, 4, 2, scale=4.0)
    prompts = [[3, 4, 5, 3, 4, 5, 3], [7, 8]]
    sampling = SamplingConfig(temperature=0.8, top_k=8)
    plain = generate(model, params, prompts, max_new_tokens=24, sampling=sampling, seed=[5, 6])
    drafter, dparams = _drafter(method, VOCAB, sampling, batch=2)
    fast = generate(model, params, prompts, max_new_tokens=24, sampling=sampling, seed=[5, 6], drafter=drafter)
    assert [g.output_ids for g in fast] == [g.output_ids for g in plain]


@pytest.mark.parametrize("method", ["jacobi", "speculative-jacobi"])
def test_jacobi_reaches_an_order_0_fixed_point_in_one_iteration(method):
    window, new = 4, 23
    table = _cycle_table()
    drafter, _ = _drafter(method, TOY_V, window=window, batch=1)
    out = generate(PositionToy(TOY_V), table, [[9, 12, 10]], max_new_tokens=new, drafter=drafter)[0]
    assert out.output_ids == [(3 + i) % CYCLE for i in range(new)]
    assert out.accept_lengths == [1, window + 1] * 3 + [1, 4]  # the budget cuts the last window


def test_jacobi_needs_w_iterations_for_w_tokens_of_an_order_1_model():
    table = _cycle_table()
    drafter, _ = _drafter("jacobi", TOY_V, window=4, batch=1)
    out = generate(ToyModel(TOY_V), table, [[9, 12, 10]], max_new_tokens=20, drafter=drafter)[0]
    assert out.output_ids == [(4 + i) % CYCLE for i in range(20)]  # 10 leads to 4
    assert out.accept_lengths == [1] * 20


def test_lookahead_learns_the_cycle_and_accepts_whole_ngrams():
    levels = 3
    table = _cycle_table()
    drafter, _ = _drafter("lookahead", TOY_V, window=4, batch=1)
    out = generate(ToyModel(TOY_V), table, [[0, 1, 2, 3, 4, 5, 6, 0]], max_new_tokens=60, drafter=drafter)[0]
    assert out.output_ids == [(1 + i) % CYCLE for i in range(60)]
    warm = out.accept_lengths[6:-1]
    assert warm and min(warm) >= levels


def test_lookahead_auto_decodes_plainly_where_its_tree_cannot_pay(monkeypatch, tmp_path):
    """c(w) is non-decreasing from c(1) = 1, so a tree emitting 1 token per call never pays; 1000 always does."""
    monkeypatch.setenv("JAXSPEC_CACHE", str(tmp_path))
    model, params = random_model(23, 1, 32, 4, 2)
    tree = Lookahead(4, 3, 4)
    monkeypatch.setattr(methods, "LOOKAHEAD_TOKENS_PER_CALL", 1.0)
    assert not methods.auto_lookahead(model, params, 1, tree)
    monkeypatch.setattr(methods, "LOOKAHEAD_TOKENS_PER_CALL", 1000.0)
    assert methods.auto_lookahead(model, params, 1, tree)
