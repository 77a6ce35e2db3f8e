"""Draft sizing from a measured cost curve: fake curves drive known choices, the loop stays exact under any
sizing, and measured curves are cached on disk under a key no other model, dtype or backend shares."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import cost_model
from jaxspec.cost_model import CostCurve, cost_curve, sizing_from_curves
from jaxspec.draft_sizing import DraftSizing, SizingState
from jaxspec.drafters.autoregressive import Autoregressive
from jaxspec.drafters.base import Draft
from jaxspec.drafters.draft_model import DraftModel
from jaxspec.drafters.prompt_lookup import PromptLookup
from jaxspec.errors import InputError
from jaxspec.generate import generate
from jaxspec.sampling import SamplingConfig
from jaxspec.tree import chain_parents, tree_shape
from tests.random_models import noisy_copy, random_model
from tests.test_speculative import assert_same_text, final_decode_state

# Gemma 3 270M, float32, batch 1, on the 2-core CI machine (bench/forward_cost.py), as the cost of a step
# verifying k = 0..8 drafts: the loop compiles widths 1, 2, 3, 5, 9, so k = 3, 4 cost c(5) and k = 5..8 c(9).
GEMMA_K8 = (1.0, 1.66, 1.81, 1.85, 1.85, 2.25, 2.25, 2.25, 2.25)


def _state(rows: list[float], k: int = 8, count: float = 9.0) -> SizingState:
    """Rows whose every depth was reached `count` times and accepted with the given share of them."""
    trials = jnp.full((len(rows), k), count)
    return SizingState(trials, trials * jnp.asarray(rows)[:, None])


ALL = jnp.array([True, True])


def test_a_flat_cost_verifies_every_draft_available():
    s = DraftSizing((1.0,) * 5)
    assert s.limit(s.init(3), jnp.array([4, 2, 0]), jnp.ones(3, bool)).tolist() == [4, 2, 0]


def test_a_cost_growing_like_the_window_makes_every_step_plain():
    s = DraftSizing(tuple(1.0 + k for k in range(5)))  # each draft costs a full forward: never worth it
    assert s.limit(s.init(3), jnp.array([4, 4, 1]), jnp.ones(3, bool)).tolist() == [0, 0, 0]


def test_the_choice_follows_the_curve_and_the_acceptance():
    s = DraftSizing(GEMMA_K8)
    eight, one = jnp.array([8]), jnp.array([True])
    # Every depth accepted 9 of 9 times: h(1) = 12/13, each deeper one closer to 1, and g(8)/c(9) = 3.64
    # beats g(4)/c(5) = 2.49: all 8.
    assert s.limit(_state([1.0]), eight, one).tolist() == [8]
    # Never accepted: h(1) = 3/13, and no draft pays (best: g(1)/c(2) = 0.74 < 1): a plain step.
    assert s.limit(_state([0.0]), eight, one).tolist() == [0]
    # Only 2 proposed: g(2)/c(3) = 1.56 beats a plain step.
    assert s.limit(_state([1.0]), jnp.array([2]), one).tolist() == [2]


def test_one_cap_for_the_batch_because_the_widest_row_sets_the_cost():
    s = DraftSizing(GEMMA_K8)
    # Two rows accepting 90% of drafts, 6 and 2 proposed: a cap of 4 (cost c(5) = 1.85) beats 6 (c(7) = 2.25).
    assert s.limit(_state([0.9, 0.9]), jnp.array([6, 2]), ALL).tolist() == [4, 2]
    # A row that would not draft alone rides along once the copying row pays for the width.
    assert s.limit(_state([1.0, 0.0]), jnp.array([8, 8]), ALL).tolist() == [8, 8]
    # A finished row neither drafts nor counts.
    assert s.limit(_state([0.0, 1.0]), jnp.array([8, 8]), jnp.array([True, False])).tolist() == [0, 0]


def test_drafting_cost_counts_against_long_drafts():
    free, costly = DraftSizing((1.0,) * 5), DraftSizing((1.0,) * 5, draft_cost=1.0)
    available, one = jnp.array([4]), jnp.array([True])
    assert free.limit(free.init(1), available, one).tolist() == [4]
    assert costly.limit(costly.init(1), available, one).tolist() == [0]


def test_counts_per_depth_grow_with_what_verify_saw_and_decay_otherwise():
    s = DraftSizing((1.0,) * 5, decay=0.5)
    state = s.observe(s.init(3), verified=jnp.array([4, 4, 0]), accepted=jnp.array([4, 1, 0]))
    # Row 0 reached and kept all 4; row 1 kept draft 0 and was rejected at draft 1; row 2 verified nothing.
    assert state.trials.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert state.accepts.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]]
    h = s.acceptance(state)
    assert h[0, 0] > 0.75 and h[1, 1] < 0.75 and h[2, 0] == pytest.approx(0.75)  # the prior: 3 / (3 + 1)
    idle = s.observe(state, verified=jnp.zeros(3, jnp.int32), accepted=jnp.zeros(3, jnp.int32))
    assert idle.trials.tolist()[1] == [0.5, 0.5, 0, 0] and idle.accepts.tolist()[1] == [0.5, 0, 0, 0]


# Gemma 3 270M's batch-1 curve with kernels v3 (bench/forward_cost.py) for k = 0..16 drafts: widths 1, 2, 3, 5,
# 9 and 17 compiled.
GEMMA_K16 = (1.0, 1.0, 1.04, 1.12, 1.12) + (1.46,) * 4 + (2.0,) * 8


def test_a_depth_never_tried_starts_where_the_depth_before_it_stands():
    s = DraftSizing(GEMMA_K16)
    # A copy accepted at each of the first 8 depths 9 times of 9; depths 9-16 never tried. They start from
    # depth 8's estimate (above the prior's 0.75), so the long draft is offered: g(16)/c(17) = 7.7 beats g(8)/c(9) = 5.6. With every
    # depth's prior mean at 0.75 instead, g(16)/c(17) was 4.0 against g(8)/c(9) = 4.6, and 8 drafts won.
    trials = jnp.concatenate([jnp.full((1, 8), 9.0), jnp.zeros((1, 8))], axis=1)
    state = SizingState(trials, trials)
    h = s.acceptance(state)
    assert h[0, 8:].tolist() == pytest.approx([float(h[0, 7])] * 8)
    assert s.limit(state, jnp.array([16]), jnp.array([True])).tolist() == [16]
    # A first draft rejected 9 times of 9 does not drag the untried depths after it below the prior's 0.75.
    trials = jnp.concatenate([jnp.full((1, 1), 9.0), jnp.zeros((1, 15))], axis=1)
    h = s.acceptance(SizingState(trials, jnp.zeros_like(trials)))
    assert float(h[0, 0]) == pytest.approx(3 / 13) and h[0, 1:].tolist() == pytest.approx([0.75] * 15)


# A 4-node tree: nodes 0 and 2 follow the root, node 1 follows node 0, node 3 follows node 1.
TREE_PARENTS = jnp.array([[-1, 0, -1, 1]])


def test_a_trees_expected_tokens_multiply_acceptance_down_each_nodes_path():
    s = DraftSizing((1.0,) * 5)
    h = jnp.array([[0.8, 0.5, 0.3, 0.9]])
    state = SizingState(jnp.full((1, 4), 1e6), 1e6 * h)  # so many trials that the prior is gone
    survival = [0.8, 0.8 * 0.5, 0.3, 0.8 * 0.5 * 0.9]
    expected = [1.0] + [1.0 + sum(survival[:k]) for k in range(1, 5)]
    assert s.expected_tokens(state, tree_shape(TREE_PARENTS))[0].tolist() == pytest.approx(expected, rel=1e-5)


def test_a_chain_sized_as_a_tree_is_sized_as_a_chain():
    s = DraftSizing(GEMMA_K8)
    state = s.observe(_state([0.7, 0.2]), jnp.array([8, 3]), jnp.array([5, 1]))
    chain = tree_shape(chain_parents(2, 8))
    np.testing.assert_allclose(s.expected_tokens(state, chain), s.expected_tokens(state), rtol=1e-5)
    path = jnp.broadcast_to(jnp.arange(9), (2, 9))
    as_tree = s.observe(state, jnp.array([6, 8]), jnp.array([2, 8]), path, chain)
    as_chain = s.observe(state, jnp.array([6, 8]), jnp.array([2, 8]))
    assert as_tree.trials.tolist() == as_chain.trials.tolist() and as_tree.accepts.tolist() == as_chain.accepts.tolist()


def test_a_tree_node_is_tried_when_its_parent_was_accepted_and_it_was_verified():
    s = DraftSizing((1.0,) * 5, decay=0.5)
    parents = jnp.broadcast_to(TREE_PARENTS, (3, 4))
    # Row 0 accepted nodes 2 (depth 1): its siblings' children were not reached. Row 1 accepted 0 then 1,
    # with only the first 3 nodes verified, so node 3 was not tried. Row 2 accepted nothing of all 4.
    path = jnp.array([[0, 3, 0, 0, 0], [0, 1, 2, 0, 0], [0, 0, 0, 0, 0]])
    state = s.observe(s.init(3), jnp.array([4, 3, 4]), jnp.array([1, 2, 0]), path, tree_shape(parents))
    assert state.trials.tolist() == [[1, 0, 1, 0], [1, 1, 1, 0], [1, 0, 1, 0]]
    assert state.accepts.tolist() == [[0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]


def test_each_tree_node_starts_from_its_own_prior_and_a_prefix_is_verified():
    # Node 2, a second guess after the root, is rarely right: the prior says 5%.
    s = DraftSizing((1.0, 1.05, 1.3, 1.35, 1.6), node_prior=(0.9, 0.9, 0.05, 0.9))
    assert s.acceptance(s.init(1))[0].tolist() == pytest.approx([0.9, 0.9, 0.05, 0.9])
    shape = tree_shape(TREE_PARENTS)
    # g(k) = 1, 1.9, 2.71, 2.76, 3.49 over costs 1, 1.05, 1.3, 1.35, 1.6: 2.18 tokens a unit for all 4 nodes,
    # 2.08 for the first 2; with the fourth node at 2.5 the 2-node prefix wins (3.49 / 2.5 = 1.40).
    assert s.limit(s.init(1), jnp.array([4]), jnp.array([True]), shape).tolist() == [4]
    costly = DraftSizing((1.0, 1.05, 1.3, 1.35, 2.5), node_prior=s.node_prior)
    assert costly.limit(costly.init(1), jnp.array([4]), jnp.array([True]), shape).tolist() == [2]
    with pytest.raises(ValueError, match="node_prior needs 4"):
        DraftSizing((1.0,) * 5, node_prior=(0.5,) * 3)


def test_sizing_takes_the_cost_of_the_width_the_loop_compiles():
    target = CostCurve((1, 2, 3, 5), (0.010, 0.020, 0.030, 0.040), 1, 128)
    draft = CostCurve((1,), (0.005,), 1, 128)
    sizing = sizing_from_curves(target, 4, draft)
    assert sizing.verify_cost == pytest.approx((1.0, 2.0, 3.0, 4.0, 4.0)) and sizing.draft_cost == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"lacks widths \[9\]"):
        sizing_from_curves(target, 8)


def test_a_wider_forward_that_timed_faster_costs_what_the_narrower_one_did():
    noisy = CostCurve((3, 1, 2, 5), (0.030, 0.010, 0.008, 0.025), 1, 128)
    assert noisy.sizing_costs() == pytest.approx({1: 1.0, 2: 1.0, 3: 3.0, 5: 3.0})
    assert sizing_from_curves(noisy, 4).verify_cost == pytest.approx((1.0, 1.0, 3.0, 3.0, 3.0))


REPEATING = [5, 6, 7, 8, 9, 10, 11, 12] * 4


@pytest.fixture(scope="module")
def lm():
    return random_model(0, 2, 32, 4, 2)


def _run(lm, prompts, **kw):
    model, params = lm
    return generate(model, params, prompts, max_new_tokens=24, **kw)


@pytest.mark.parametrize("cost, plain_steps", [(tuple(1.0 + 10 * k for k in range(9)), True), ((1.0,) * 9, False)])
def test_prompt_lookup_under_any_sizing_gives_plain_decodings_tokens(lm, cost, plain_steps):
    prompts = [REPEATING, [3, 4, 5, 3, 4], [9] * 7]
    plain = _run(lm, prompts)
    fixed = _run(lm, prompts, drafter=PromptLookup(8))
    sized = _run(lm, prompts, drafter=PromptLookup(8), sizing=DraftSizing(cost))
    assert [g.output_ids for g in sized] == [g.output_ids for g in plain]
    if plain_steps:  # nothing pays: every step is a plain one
        assert [g.target_calls for g in sized] == [g.new_tokens for g in sized]
    else:  # drafting is free: every proposed draft is verified, as with a fixed K
        assert [g.target_calls for g in sized] == [g.target_calls for g in fixed]


def test_sized_prompt_lookup_sampling_draws_what_plain_sampling_draws(lm):
    """Point-mass drafts emit the target's own draws (acceptance.py), so sizing cannot change a token."""
    sampling = SamplingConfig(temperature=1.0)
    prompts = [REPEATING, [3, 4, 5, 3, 4]]
    plain = _run(lm, prompts, sampling=sampling, seed=7)
    sized = _run(lm, prompts, sampling=sampling, seed=7, drafter=PromptLookup(8), sizing=DraftSizing(GEMMA_K8))
    assert [g.output_ids for g in sized] == [g.output_ids for g in plain]


def test_sized_draft_model_is_exact_and_stops_drafting_where_it_cannot_pay(lm):
    model, params = lm
    drafter = DraftModel(model, 4, SamplingConfig())
    draft_params = noisy_copy(params, 1, noise=0.1)
    prompts = [REPEATING, [3, 4, 5]]
    plain = _run(lm, prompts)
    for cost, draft_cost in (((1.0,) * 5, 0.1), ((1.0, 3.0, 4.0, 5.0, 6.0), 0.5)):
        sized = _run(lm, prompts, drafter=drafter, drafter_params=draft_params, sizing=DraftSizing(cost, draft_cost))
        assert [g.output_ids for g in sized] == [g.output_ids for g in plain]
    assert [g.target_calls for g in sized] == [g.new_tokens for g in sized]


@dataclasses.dataclass(frozen=True)
class CountingRepeats:
    """Drafts its row's last token K times; its state counts the steps it proposed in. Its `idle` proposes
    nothing and counts nothing."""

    num_draft_tokens: int = 3

    def init(self, params, prompts, prompt_len, new_slots, start):
        return jnp.zeros((), jnp.int32)

    def propose(self, params, state, ctx):
        b, k = ctx.seq_len.shape[0], self.num_draft_tokens
        last = ctx.history[jnp.arange(b), ctx.seq_len - 1]
        return Draft(jnp.broadcast_to(last[:, None], (b, k)), jnp.full((b,), k, jnp.int32), None), state + 1

    def idle(self, params, state, ctx):
        b, k = ctx.seq_len.shape[0], self.num_draft_tokens
        return Draft(jnp.zeros((b, k), jnp.int32), jnp.zeros((b,), jnp.int32), None), state

    def update(self, params, state, ctx, verified):
        return state


def test_a_drafter_with_an_idle_step_is_not_asked_to_draft_where_no_row_may(lm):
    """Where the sizing lets no row draft, the loop takes the drafter's `idle`: no drafting work at all,
    so a plain step costs what plain decoding's does; where drafting pays, every step proposes."""
    model, params = lm
    prompts = [REPEATING, [3, 4, 5]]
    plain = final_decode_state(model, params, prompts, 16, Autoregressive(), None)
    never = final_decode_state(model, params, prompts, 16, CountingRepeats(), None,
                               DraftSizing((1.0, 9.0, 9.0, 9.0), draft_cost=9.0))
    always = final_decode_state(model, params, prompts, 16, CountingRepeats(), None, DraftSizing((1.0,) * 4))
    for state in (never, always):
        assert_same_text(state, plain)
    assert int(never.drafter_state) == 0
    np.testing.assert_array_equal(np.asarray(never.calls), np.asarray(plain.calls))
    assert int(always.drafter_state) == int(np.max(np.asarray(always.calls))) > 0


def test_a_sizing_for_another_draft_length_is_refused(lm):
    with pytest.raises(InputError, match="covers 4 drafts but the drafter proposes 8"):
        _run(lm, [[1, 2, 3]], drafter=PromptLookup(8), sizing=DraftSizing((1.0,) * 5))


def test_measured_curves_are_cached_under_a_key_of_model_dtype_formulation_and_backend(lm, tmp_path, monkeypatch):
    model, params = lm
    measured = []

    def fake_measure(model, params, *, widths, batch_size, context, repeats, per_call):
        assert per_call == cost_model.PER_CALL  # the loop dispatches once a call, not once a step
        measured.append((model, batch_size))
        return CostCurve(tuple(widths), tuple(0.01 * w for w in widths), batch_size, context)

    monkeypatch.setattr(cost_model, "measure_forward_cost", fake_measure)
    kw = dict(batch_size=1, widths=(1, 2, 3), cache_dir=tmp_path)
    first = cost_curve(model, params, **kw)
    assert cost_curve(model, params, **kw) == first and len(measured) == 1  # read back, not measured again

    other_model, other_params = random_model(0, 3, 32, 4, 2)
    cost_curve(other_model, other_params, **kw)
    cost_curve(model, jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params), **kw)
    cost_curve(model, params, **{**kw, "batch_size": 8})
    monkeypatch.setenv("JAXSPEC_MATMUL", "xla")  # the same model with few-row products through XLA's dot
    cost_curve(model, params, **kw)
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    cost_curve(model, params, **kw)
    assert len(measured) == 6 and len(list(tmp_path.glob("*.json"))) == 6
