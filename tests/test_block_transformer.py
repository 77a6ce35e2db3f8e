"""The Block Transformer: teacher-forced vs step-by-step consistency, decoding through the one engine, its
checkpoint directory, and its bad inputs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxspec import InputError
from jaxspec.generate import generate
from jaxspec.hf_io import save_hf
from jaxspec.loading import load
from jaxspec.sampling import SamplingConfig
from models import ModelConfigError, build_model

from tests.block_factory import VARIANTS, block_config, tiny_block

L = 4


def _ragged_prompts(vocab: int, lengths, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, n).tolist() for n in lengths]


def _padded(prompts):
    """Rows of ids (or bytes) right-padded with 0 to the longest, and their lengths, as arrays."""
    width = max(len(p) for p in prompts)
    out = np.zeros((len(prompts), width), np.int32)
    for i, p in enumerate(prompts):
        out[i, : len(p)] = list(p)
    return jnp.asarray(out), jnp.asarray([len(p) for p in prompts], jnp.int32)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_step_by_step_logits_equal_the_teacher_forced_forward(variant):
    """Prompts ending at every offset in a block; each step's next-token logits equal the full forward's,
    across block boundaries, and the block cache holds one entry per completed block (plus the start)."""
    model, params, _ = tiny_block(variant)
    lengths = [1, 2, 3, 4, 5, 7, 8, 9]
    prompts = _ragged_prompts(model.vocab_size, lengths)
    steps = 11
    rng = np.random.default_rng(1)
    full = [p + rng.integers(3, model.vocab_size, steps).tolist() for p in prompts]
    sequences, _ = _padded(full)
    want = model.sequence_logits(params, sequences)  # want[:, t] scores token t + 1
    tokens, prompt_len = _padded(prompts)
    cache = jax.jit(model.start, static_argnums=3)(params, tokens, prompt_len, steps + 4).cache
    step, close = jax.jit(model.step_in_unit), jax.jit(model.close_units)
    n = np.asarray(prompt_len)
    rows = np.arange(len(prompts))
    for _ in range(steps):
        np.testing.assert_allclose(cache.logits, want[rows, n - 1], atol=1e-5, rtol=0)
        going = ~model.unit_full(cache)
        cache = step(params, sequences[rows, n], cache, going)
        n = n + np.asarray(going)
        cache = close(params, cache, model.unit_full(cache))
    np.testing.assert_array_equal(cache.lengths, n)
    np.testing.assert_array_equal(cache.blocks.lengths, n // L + 1)
    np.testing.assert_array_equal(cache.fill, n % L)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_greedy_generation_is_the_argmax_chain_of_the_teacher_forced_forward(variant):
    model, params, _ = tiny_block(variant, seed=3)
    params = jax.tree_util.tree_map(lambda x: x * 4, params)  # sharper distributions: no near-ties in argmax
    prompts = _ragged_prompts(model.vocab_size, [3, 6, 8, 1, 13], seed=2)
    gens = generate(model, params, prompts, max_new_tokens=10)
    sequences, lengths = _padded([g.prompt_ids + g.output_ids for g in gens])
    argmax = np.asarray(jnp.argmax(model.sequence_logits(params, sequences), axis=-1))
    for i, g in enumerate(gens):
        p = len(g.prompt_ids)
        assert len(g.output_ids) == 10
        assert g.output_ids == argmax[i, p - 1 : p + 9].tolist()
        # A row whose prompt ends mid-block finishes that block first: then whole blocks, the last cut by the budget.
        first = L - p % L
        assert g.accept_lengths[0] == first and sum(g.accept_lengths) == 10
        assert all(n == L for n in g.accept_lengths[1:-1])


def test_stop_token_mid_block_and_batch_independence():
    model, params, _ = tiny_block(seed=5)
    params = jax.tree_util.tree_map(lambda x: x * 4, params)
    prompts = _ragged_prompts(model.vocab_size, [5, 2, 11], seed=4)
    free = generate(model, params, prompts, max_new_tokens=12)
    stop = free[0].output_ids[5]  # the 6th token of row 0: mid-block, since its prompt has 5 tokens
    stopped = generate(model, params, prompts, max_new_tokens=12, stop_ids=[stop])
    for f, s in zip(free, stopped):
        cut = f.output_ids.index(stop) + 1 if stop in f.output_ids else len(f.output_ids)
        assert s.output_ids == f.output_ids[:cut]
    sampling = SamplingConfig(temperature=1.0, top_p=0.9)
    batch = generate(model, params, prompts, max_new_tokens=9, sampling=sampling, seed=[7, 8, 9])
    alone = generate(model, params, prompts[1:2], max_new_tokens=9, sampling=sampling, seed=[8])
    assert batch[1].output_ids == alone[0].output_ids


@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=0.7, top_k=5)])
def test_sampled_pairs_across_a_block_boundary_follow_the_model(sampling):
    """Prompts of 3 tokens: the first new token ends block 0, the second is the first of block 1 (drawn after
    the block decoder's step). The joint distribution of the pair, over 6000 seeds, matches the model's
    (chi-square, counts pooled where expected < 5)."""
    from jaxspec.sampling import target_distribution

    model, params, _ = tiny_block(seed=11, vocab=7)
    params = jax.tree_util.tree_map(lambda x: x * 6, params)
    prompt = [3, 5, 4]
    n = 6000
    gens = generate(model, params, [prompt] * n, max_new_tokens=2, sampling=sampling, seed=list(range(n)))
    pairs = np.array([g.output_ids for g in gens])
    v = model.vocab_size
    counts = np.bincount(pairs[:, 0] * v + pairs[:, 1], minlength=v * v)

    first = target_distribution(model.sequence_logits(params, jnp.asarray([prompt]))[:, -1:], sampling)[0, 0]
    seconds = jnp.asarray([prompt + [a] for a in range(v)])
    second = target_distribution(model.sequence_logits(params, seconds)[:, -1:], sampling)[:, 0]
    expected = np.asarray(first[:, None] * second, np.float64).reshape(-1) * n
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expect = np.append(expected[big], expected[~big].sum())
    assert counts[expected == 0].sum() == 0  # nothing outside top-k is ever drawn
    keep = expect > 0
    expect = expect[keep] * observed.sum() / expect[keep].sum()
    p_value = stats.chisquare(observed[keep], expect).pvalue
    assert p_value > 1e-3, p_value


def test_checkpoint_directory_round_trip(tmp_path):
    model, params, cfg = tiny_block("projection-sum-tied", seed=2)
    save_hf(tmp_path / "bt", model, params, cfg, {}, "float32")
    names = json.loads((tmp_path / "bt" / "config.json").read_text())
    assert names["architectures"] == ["BlockTransformerForCausalLM"]
    loaded = load(tmp_path / "bt")
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), loaded.params, params))
    prompts = _ragged_prompts(model.vocab_size, [4, 7])
    want = generate(model, params, prompts, max_new_tokens=6)
    got = generate(loaded.model, loaded.params, prompts, max_new_tokens=6)
    assert [g.output_ids for g in got] == [g.output_ids for g in want]


def test_bad_configs_and_requests_are_clear_errors():
    with pytest.raises(ModelConfigError, match="block_length 3 does not divide max_position_embeddings 128"):
        build_model(block_config(block_length=3))
    with pytest.raises(ModelConfigError, match="must divide hidden_size"):
        build_model(block_config(block_length=3, max_positions=129))
    with pytest.raises(ModelConfigError, match="context_injection 'cross'"):
        build_model({**block_config(), "context_injection": "cross"})
    model, params, _ = tiny_block(max_positions=32)
    with pytest.raises(InputError, match="exceeds the model's 32 positions"):
        generate(model, params, [[3] * 30], max_new_tokens=4, max_positions=model.max_positions)
    from jaxspec.drafters.prompt_lookup import PromptLookup

    with pytest.raises(InputError, match="only the autoregressive method"):
        generate(model, params, [[3, 4]], max_new_tokens=4, drafter=PromptLookup(num_draft_tokens=3))
