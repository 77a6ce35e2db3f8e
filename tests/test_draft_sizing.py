"""Draft sizing from a measured cost curve: fake curves drive known choices, the loop stays exact under any
sizing, and measured curves are cached on disk under a key no other model, dtype or backend shares."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxspec import cost_model
from jaxspec.cost_model import CostCurve, cost_curve, sizing_from_curves
from jaxspec.draft_sizing import DraftSizing, SizingState
from jaxspec.drafters.draft_model import DraftModel
from jaxspec.drafters.prompt_lookup import PromptLookup
from jaxspec.errors import InputError
from jaxspec.generate import generate
from jaxspec.sampling import SamplingConfig
from tests.random_models import noisy_copy, random_model

# Gemma 3 270M, float32, batch 1, on the 2-core CI machine (bench/forward_cost.py), as the cost of a step
# verifying k = 0..8 drafts: the loop compiles widths 1, 2, 3, 5, 9, so k = 3, 4 cost c(5) and k = 5..8 c(9).
GEMMA_K8 = (1.0, 1.66, 1.81, 1.85, 1.85, 2.25, 2.25, 2.25, 2.25)


def _state(accepted, rejected) -> SizingState:
    return SizingState(jnp.asarray(accepted, jnp.float32), jnp.asarray(rejected, jnp.float32))


def test_a_flat_cost_verifies_every_draft_available():
    s = DraftSizing((1.0,) * 5)
    assert s.limit(s.init(3), jnp.array([4, 2, 0])).tolist() == [4, 2, 0]


def test_a_cost_growing_like_the_window_makes_every_step_plain():
    s = DraftSizing(tuple(1.0 + k for k in range(5)))  # each draft costs a full forward: never worth it
    assert s.limit(s.init(3), jnp.array([4, 4, 1])).tolist() == [0, 0, 0]


def test_the_choice_follows_the_curve_and_each_rows_acceptance():
    s = DraftSizing(GEMMA_K8)
    # Row 0: 9 accepted, no rejection: α = 12/13 and g(8)/c(9) = 2.97 beats g(4)/c(5) = 2.32, so all 8.
    # Row 1: 3 rejections: α = 3/7 and no draft pays (best: g(3)/c(5) = 0.91 < 1), so a plain step.
    # Row 2: α = 12/13 but only 6 drafts proposed: 6; row 3: only 2 proposed: 2 (g(2)/c(3) = 1.53).
    state = _state([9, 0, 9, 9], [0, 3, 0, 0])
    assert s.limit(state, jnp.array([8, 8, 6, 2])).tolist() == [8, 0, 6, 2]


def test_drafting_cost_counts_against_long_drafts():
    free, costly = DraftSizing((1.0,) * 5), DraftSizing((1.0,) * 5, draft_cost=1.0)
    available = jnp.array([4])
    assert free.limit(free.init(1), available).tolist() == [4]
    assert costly.limit(costly.init(1), available).tolist() == [0]


def test_acceptance_counts_grow_with_what_verify_saw_and_decay_otherwise():
    s = DraftSizing((1.0,) * 5, decay=0.5)
    state = s.observe(s.init(3), verified=jnp.array([4, 4, 0]), accepted=jnp.array([4, 1, 0]))
    assert state.accepted.tolist() == [4.0, 1.0, 0.0] and state.rejected.tolist() == [0.0, 1.0, 0.0]
    alpha = s.acceptance(state).tolist()
    assert alpha[0] > 0.75 > alpha[1] and alpha[2] == pytest.approx(0.75)  # the prior: 3 / (3 + 1)
    idle = s.observe(state, verified=jnp.zeros(3, jnp.int32), accepted=jnp.zeros(3, jnp.int32))
    assert idle.accepted.tolist() == [2.0, 0.5, 0.0] and idle.rejected.tolist() == [0.0, 0.5, 0.0]


def test_sizing_takes_the_cost_of_the_width_the_loop_compiles():
    target = CostCurve((1, 2, 3, 5), (0.010, 0.020, 0.030, 0.040), 1, 128)
    draft = CostCurve((1,), (0.005,), 1, 128)
    sizing = sizing_from_curves(target, 4, draft)
    assert sizing.verify_cost == pytest.approx((1.0, 2.0, 3.0, 4.0, 4.0)) and sizing.draft_cost == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"lacks widths \[9\]"):
        sizing_from_curves(target, 8)


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


def test_a_sizing_for_another_draft_length_is_refused(lm):
    with pytest.raises(InputError, match="covers 4 drafts but the drafter proposes 8"):
        _run(lm, [[1, 2, 3]], drafter=PromptLookup(8), sizing=DraftSizing((1.0,) * 5))


def test_measured_curves_are_cached_under_a_key_of_model_dtype_and_backend(lm, tmp_path, monkeypatch):
    model, params = lm
    measured = []

    def fake_measure(model, params, *, widths, batch_size, context, repeats):
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
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    cost_curve(model, params, **kw)
    assert len(measured) == 5 and len(list(tmp_path.glob("*.json"))) == 5
