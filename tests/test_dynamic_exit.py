"""Dynamic exit (DEL): greedy exactness through the loop whatever exit each step takes, the choice of exit and
draft length from decayed acceptance counts and costs, and the method's bad input."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import SamplingConfig
from jaxspec.drafters.base import Verified
from jaxspec.drafters.dynamic_exit import DynamicExitState
from jaxspec.errors import InputError
from jaxspec.generate import generate
from jaxspec.methods import build_drafter, default_exit_layers
from tests.random_models import random_model
from tests.test_layer_skip import RAGGED_PROMPTS, assert_self_drafting_is_exact


def _drafter(model, params, exits=None, k=4, **fields):
    drafter, dparams = build_drafter("dynamic-exit", batch=3, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                                     num_draft_tokens=k, target=(model, params), exit_layers=exits)
    return dataclasses.replace(drafter, **fields), dparams


@pytest.mark.parametrize("seed, exits, verify_cost", [
    (7, None, None),  # the default candidates of a 4-layer model: 1, 2, 3
    (8, (1, 3), (1.0, 1.2, 1.4, 1.6, 1.8)),
    (9, (2,), None),
])
def test_greedy_dynamic_exit_equals_plain_greedy_and_leaves_the_plain_cache(seed, exits, verify_cost):
    model, params = random_model(seed, 4, 48, 4, 2, window=4, scale=3.0)
    drafter, dparams = _drafter(model, params, exits, verify_cost=verify_cost)
    assert dparams is params and drafter.exits == (exits or (1, 2, 3))
    assert_self_drafting_is_exact(model, params, drafter, dparams)


def test_each_step_is_counted_under_the_exit_it_took():
    model, params = random_model(3, 4, 48, 4, 2, scale=3.0)
    drafter, dparams = _drafter(model, params)
    final = []
    out = generate(model, params, RAGGED_PROMPTS, max_new_tokens=16, drafter=drafter, drafter_params=dparams,
                   drafter_state_to=final.append)
    uses = np.asarray(final[0].uses)
    assert uses.sum() == max(r.target_calls for r in out) and uses[:-1].sum() > 0  # some steps drafted
    # Evidence lands only on exits that drafted; the others keep the prior's zero counts.
    tried = np.asarray(final[0].trials).sum(axis=1) > 0
    np.testing.assert_array_equal(tried, uses[:-1] > 0)


def _state(drafter, trials, accepts):
    """Counts [E, K] (a scalar fills them) with no drafting state: what choose() reads."""
    e, k = len(drafter.exits), drafter.num_draft_tokens
    counts = [jnp.broadcast_to(jnp.asarray(c, jnp.float32), (e, k)) for c in (trials, accepts)]
    return DynamicExitState(None, *counts, jnp.asarray(e), jnp.zeros(e + 1, jnp.int32))


def test_the_choice_weighs_acceptance_against_cost():
    model, params = random_model(1, 4, 48, 4, 2)
    drafter, _ = _drafter(model, params, k=4)
    r = np.asarray(drafter.draft_costs)
    assert list(r) == sorted(r) and 0 < r[0] < r[-1] < 1  # deeper exits read more of the weights
    # Untried, every exit has the prior's acceptance (0.75): the cheapest exit drafts.
    exit_index, drafts = drafter.choose(_state(drafter, 0, 0))
    assert int(exit_index) == 0 and int(drafts) >= 1
    # The shallow exit's drafts were always rejected, the deep one's always accepted: the deep one drafts all K.
    trials, accepts = np.zeros((3, 4)), np.zeros((3, 4))
    trials[0, 0], trials[2] = 30, 30
    accepts[2] = 30
    exit_index, drafts = drafter.choose(_state(drafter, trials, accepts))
    assert (int(exit_index), int(drafts)) == (2, 4)
    # Where verifying costs steeply more per token, no exit pays: a plain step (exit index E, no drafts).
    steep = dataclasses.replace(drafter, verify_cost=(1.0, 3.0, 5.0, 7.0, 9.0))
    assert tuple(map(int, steep.choose(_state(drafter, 0, 0)))) == (3, 0)


def test_a_measured_prior_starts_each_exit_from_its_own_agreement():
    model, params = random_model(1, 4, 48, 4, 2)
    drafter, _ = _drafter(model, params, k=4)
    informed = dataclasses.replace(drafter, prior_acceptance=(0.1, 0.2, 0.95))
    exit_index, drafts = informed.choose(_state(drafter, 0, 0))
    assert int(exit_index) == 2 and int(drafts) >= 1  # only the deep exit agrees
    hopeless = dataclasses.replace(drafter, prior_acceptance=(0.0, 0.0, 0.05))
    assert int(hopeless.choose(_state(drafter, 0, 0))[1]) == 0  # no exit is worth a draft: plain steps
    # Evidence moves it as it would move the default prior: the shallow exit, always accepted, takes over.
    trials, accepts = np.zeros((3, 4)), np.zeros((3, 4))
    trials[0], accepts[0] = 40, 40
    exit_index, drafts = informed.choose(_state(drafter, trials, accepts))
    assert int(exit_index) == 0 and int(drafts) >= 1


def test_only_the_chosen_exit_learns_and_every_count_decays():
    model, params = random_model(1, 4, 48, 4, 2)
    drafter, _ = _drafter(model, params, k=4)
    inner = drafter.drafters[0].init(params, jnp.zeros((2, 3), jnp.int32), jnp.asarray([3, 2]), 8,
                                     None).replace(n_valid=jnp.asarray([4, 0], jnp.int32))
    state = _state(drafter, np.full((3, 4), 10.0), np.full((3, 4), 5.0)).replace(inner=inner, chosen=jnp.asarray(1))
    verified = Verified(n_accepted=jnp.asarray([2, 0]), next_token=None, path=None, hidden=None, window=None,
                        logits=None, scored=None)

    class Ctx:
        done = jnp.asarray([False, False])

    new = drafter.update(params, state, Ctx, verified)
    d = drafter.decay
    # Row 0 drafted 4 and kept 2: drafts 0..2 reached, 0..1 kept; row 1 drafted nothing and says nothing.
    np.testing.assert_allclose(np.asarray(new.trials[1]), 10 * d + np.asarray([1, 1, 1, 0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new.accepts[1]), 5 * d + np.asarray([1, 1, 0, 0]), rtol=1e-6)
    for e in (0, 2):
        np.testing.assert_allclose(np.asarray(new.trials[e]), 10 * d, rtol=1e-6)


def test_default_exits_and_bad_input():
    assert default_exit_layers(18) == (4, 9, 14) and default_exit_layers(3) == (1, 2) and default_exit_layers(2) == (1,)
    model, params = random_model(1, 4, 48, 4, 2)
    with pytest.raises(InputError, match=r"exit layer must be in \[1, 4\) for a 4-layer model, got 4"):
        _drafter(model, params, exits=(1, 4))
    with pytest.raises(InputError, match="needs the target"):
        build_drafter("dynamic-exit", batch=1, sampling=SamplingConfig(), target_vocab=model.vocab_size)
