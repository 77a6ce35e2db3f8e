"""Sampling: the filters agree with transformers' logits warpers, and sampled tokens follow softmax(filtered logits)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy import stats
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from jaxspec import InputError, SamplingConfig, load
from jaxspec.generate import generate
from jaxspec.sampling import filtered_logits, target_distribution
from tests.hf_factory import make_hf_model

CONFIGS = [
    SamplingConfig(temperature=1.0),
    SamplingConfig(temperature=0.7, top_k=5),
    SamplingConfig(temperature=1.3, top_p=0.8),
    SamplingConfig(temperature=0.9, min_p=0.05),
    SamplingConfig(temperature=0.8, top_k=20, top_p=0.9, min_p=0.02),
]


def _hf_filtered(logits: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    scores = torch.tensor(logits)
    warpers = [TemperatureLogitsWarper(cfg.temperature)]
    if cfg.top_k:
        warpers.append(TopKLogitsWarper(cfg.top_k))
    if cfg.top_p < 1:
        warpers.append(TopPLogitsWarper(cfg.top_p))
    if cfg.min_p:
        warpers.append(MinPLogitsWarper(cfg.min_p))
    for w in warpers:
        scores = w(None, scores)
    return torch.softmax(scores, -1).numpy()


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_filters_match_transformers(cfg):
    logits = np.random.RandomState(0).randn(64, 97).astype(np.float32) * 3
    ours = np.asarray(target_distribution(jnp.asarray(logits), cfg))
    np.testing.assert_allclose(ours, _hf_filtered(logits, cfg), atol=1e-6)


def test_greedy_is_the_argmax_point_mass():
    logits = jnp.asarray(np.random.RandomState(1).randn(4, 33), jnp.float32)
    p = np.asarray(target_distribution(logits, SamplingConfig()))
    assert (p.argmax(-1) == np.asarray(logits).argmax(-1)).all() and (p.max(-1) == 1).all()


@pytest.mark.parametrize(
    "kwargs",
    [dict(temperature=-1), dict(top_k=-2), dict(top_p=0), dict(top_p=1.5), dict(min_p=1.0), dict(temperature=np.nan)],
)
def test_bad_values_are_refused(kwargs):
    with pytest.raises(InputError):
        SamplingConfig(**kwargs)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m")
    hf = make_hf_model("llama", path, std=0.1)  # flatter logits: many tokens in play
    return hf, load(path)


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[4]], ids=str)
def test_first_token_follows_filtered_softmax(model, cfg):
    """Chi-square on 20 000 draws of the first new token against transformers' filtered distribution."""
    hf, lm = model
    prompt = [5, 17, 33, 8]
    n = 20_000
    out = generate(lm.model, lm.params, [prompt] * n, max_new_tokens=1, sampling=cfg, seed=3)
    counts = np.bincount([r.output_ids[0] for r in out], minlength=lm.model.vocab_size)
    with torch.no_grad():
        logits = hf(torch.tensor([prompt])).logits[0, -1].numpy()[None]
    expected = _hf_filtered(logits, cfg)[0].astype(np.float64)
    assert counts[expected == 0].sum() == 0, "sampled a token the filters remove"
    keep = expected > 0
    # Pool rare tokens so every cell expects >= 5 draws (chi-square validity).
    order = np.argsort(expected[keep])
    exp_sorted, obs_sorted = expected[keep][order] * n, counts[keep][order]
    rare = np.cumsum(exp_sorted) < 5
    exp_cells = np.append(exp_sorted[~rare], exp_sorted[rare].sum()) if rare.any() else exp_sorted
    obs_cells = np.append(obs_sorted[~rare], obs_sorted[rare].sum()) if rare.any() else obs_sorted
    assert stats.chisquare(obs_cells, exp_cells * obs_cells.sum() / exp_cells.sum()).pvalue > 1e-3
    # Power check: the test distinguishes a 2% total-variation shift at this sample size.
    tv = 0.5 * np.abs(counts / n - expected).sum()
    assert tv < 0.03


def test_seeded_sampling_is_reproducible(model):
    _, lm = model
    cfg = SamplingConfig(temperature=1.0, top_p=0.95)
    run = lambda seed: [r.output_ids for r in generate(lm.model, lm.params, [[5, 6], [7]], max_new_tokens=12, sampling=cfg, seed=seed)]
    assert run(11) == run(11)
    assert run(11) != run(12)


def test_filtered_logits_keep_at_least_one_token():
    logits = jnp.asarray([[0.0, 0.0, 10.0, -5.0]])
    x = np.asarray(filtered_logits(logits, SamplingConfig(temperature=1.0, top_p=0.01, min_p=0.99)))
    assert np.isfinite(x).sum() == 1 and np.isfinite(x[0, 2])
