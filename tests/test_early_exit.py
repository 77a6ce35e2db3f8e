"""Self-speculation by early exit through an adapter (Kangaroo): greedy exactness and the plain cache
through the loop, the adapter's own cache kept in step with the text, the untrained adapter as plain early
exit, adapter directories, and bad input."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import SamplingConfig
from jaxspec.draft_sizing import DraftSizing
from jaxspec.drafters.autoregressive import Autoregressive
from jaxspec.generate import generate
from jaxspec.errors import CheckpointError, InputError
from jaxspec.heads_io import load_heads, save_heads
from jaxspec.methods import build_drafter, untrained_adapter
from models.layer_skip import SkipSet
from tests.random_models import perturbed, random_model
from tests.test_layer_skip import RAGGED_PROMPTS, _with_identity_layers, assert_self_drafting_is_exact
from tests.test_speculative import assert_same_text, final_decode_state

def _drafter(model, params, exit_layer, batch, draft_vocab=None, k=4, noise=0.2):
    drafter, dparams = build_drafter("early-exit", batch=batch, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                                     num_draft_tokens=k, target=(model, params), exit_layer=exit_layer,
                                     draft_vocab=draft_vocab)
    return drafter, {"target": params, "adapter": perturbed(dparams["adapter"], 1, noise)}


@pytest.mark.parametrize("exit_layer,draft_vocab", [(1, None), (2, 5)])
def test_greedy_early_exit_equals_plain_greedy_and_leaves_the_plain_cache(exit_layer, draft_vocab):
    model, params = random_model(7, 3, 64, 4, 2, window=4, scale=3.0)
    drafter, dparams = _drafter(model, params, exit_layer, 3, draft_vocab)
    assert dparams["target"] is params  # the target's own params, not a copy
    assert_self_drafting_is_exact(model, params, drafter, dparams)


# Sizings for 3 drafts: none (every step drafts), one where drafting never pays (every step is the drafter's
# `idle`: no shallow layer runs), and one under which steps draft while the drafts hold and sit out after
# rejections.
NEVER = DraftSizing((1.0, 9.0, 9.0, 9.0), draft_cost=9.0)
SOMETIMES = DraftSizing((1.0, 1.5, 1.7, 1.9), draft_cost=0.2, decay=0.5)


@pytest.mark.parametrize("sizing", [None, NEVER, SOMETIMES], ids=["always", "never", "sometimes"])
def test_the_adapter_cache_holds_the_adapters_keys_and_values_of_the_committed_text(sizing):
    """After decoding (drafts accepted in full, in part, rejected, and steps that drafted nothing), the
    adapter's committed K/V equal those of one pass of the shallow layers and the adapter over the final
    text: the K/V written from the target's tapped h_E are the drafter's own."""
    model, params = _with_identity_layers(random_model(2, 3, 64, 4, 2, scale=3.0), (2,))
    drafter, dparams = _drafter(model, params, 2, 3, k=3, noise=0.02)
    drafter = dataclasses.replace(drafter, min_confidence=0.0)
    state = final_decode_state(model, params, RAGGED_PROMPTS, 12, drafter, dparams, sizing)
    plain = final_decode_state(model, params, RAGGED_PROMPTS, 12, Autoregressive(), None)
    assert_same_text(state, plain)
    accepted = np.asarray(state.accept_lengths)
    if sizing is NEVER:
        assert np.array_equal(np.asarray(state.calls), np.asarray(plain.calls))
    else:
        assert (accepted == 4).any() and ((accepted > 0) & (accepted < 4)).any()
    cache = state.drafter_state.adapter_cache
    seq_len = np.asarray(state.seq_len)
    np.testing.assert_array_equal(np.asarray(cache.lengths), seq_len - 1)
    b, n = state.history.shape[0], int(seq_len.max())
    positions = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
    exit_model = drafter.model
    hidden = exit_model.exit_hidden(params, state.history[:, :n], positions, model.init_cache(b, n)).hidden
    _, fresh = exit_model.adapter.apply(dparams["adapter"], hidden, positions, exit_model.adapter.init_cache(b, n))
    for row, length in enumerate(seq_len - 1):
        np.testing.assert_allclose(np.asarray(cache.keys[0][row, ..., :length]),
                                   np.asarray(fresh.keys[0][row, ..., :length]), atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(cache.values[0][row, :, :length]),
                                   np.asarray(fresh.values[0][row, :, :length]), atol=2e-5, rtol=1e-5)


def test_the_tap_at_the_exit_is_what_the_shallow_layers_alone_output():
    """forward(..., tap=E).tapped is h_E, which the drafter reads instead of running layers 0..E-1 again."""
    model, params = random_model(4, 3, 64, 4, 2, window=4, scale=3.0)
    tokens = jnp.asarray([[5, 9, 3, 7, 1, 2], [1, 2, 3, 4, 5, 6]], jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
    full = model.forward(params, tokens, positions, model.init_cache(2, 6), tap=2)
    plain = model.forward(params, tokens, positions, model.init_cache(2, 6))
    shallow = model.forward(params, tokens, positions, model.init_cache(2, 6), skip=SkipSet.exit_after(2, 3),
                            head=False)
    np.testing.assert_allclose(np.asarray(full.tapped), np.asarray(shallow.hidden), atol=1e-6, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(full.logits), np.asarray(plain.logits))
    assert plain.tapped is None


def test_an_untrained_adapter_drafts_as_plain_early_exit():
    """Its output projection is zero: every step accepts what layer skipping with exit:E accepts."""
    model, params = random_model(3, 3, 64, 4, 2, scale=3.0)
    exit_drafter, exit_params = build_drafter("early-exit", batch=3, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                                              num_draft_tokens=3, target=(model, params), exit_layer=2)
    skip_drafter, _ = build_drafter("layer-skip", batch=3, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                                    num_draft_tokens=3, target=(model, params), skip=SkipSet.parse("exit:2", 3))
    skip_drafter = type(skip_drafter)(skip_drafter.model, 3, SamplingConfig(), min_confidence=exit_drafter.min_confidence)
    a = generate(model, params, RAGGED_PROMPTS, max_new_tokens=16, drafter=exit_drafter, drafter_params=exit_params)
    b = generate(model, params, RAGGED_PROMPTS, max_new_tokens=16, drafter=skip_drafter, drafter_params=params)
    assert [r.accept_lengths for r in a] == [r.accept_lengths for r in b]


def test_adapter_directories_round_trip_and_refuse_another_target(tmp_path):
    model, params = random_model(4, 3, 64, 4, 2)
    adapter = untrained_adapter(model, 2)
    adapter_params = perturbed(adapter.init_params(jax.random.key(0)), 1, 0.2)
    save_heads(tmp_path / "adapter", adapter, adapter_params)
    loaded = load_heads(tmp_path / "adapter", model)
    assert loaded.heads == adapter
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, adapter_params)
    other, _ = random_model(4, 4, 64, 4, 2)
    with pytest.raises(CheckpointError, match="target layers 3, but this target has 4"):
        load_heads(tmp_path / "adapter", other)
    with pytest.raises(InputError, match="an exit adapter, not draft heads"):
        build_drafter("medusa", batch=1, sampling=SamplingConfig(), target_vocab=model.vocab_size, heads=loaded,
                      target=(model, params), tree_size=4)
    with pytest.raises(InputError, match="follows layer 2, not --exit-layer 1"):
        build_drafter("early-exit", batch=1, sampling=SamplingConfig(), target_vocab=model.vocab_size, heads=loaded,
                      target=(model, params), exit_layer=1)


@pytest.mark.parametrize("exit_layer", [0, 3, None])
def test_bad_exit_layers_are_one_clear_error(exit_layer):
    model, params = random_model(4, 3, 64, 4, 2)
    message = "exit layer must be in \\[1, 3\\)" if exit_layer is not None else "needs an exit adapter"
    with pytest.raises(InputError, match=message):
        build_drafter("early-exit", batch=1, sampling=SamplingConfig(), target_vocab=model.vocab_size,
                      target=(model, params), exit_layer=exit_layer)
