"""T5Gemma against transformers (torch CPU) on a tiny random model with every option that bites.

Teacher-forced logprobs match within 1e-4 in float32; greedy decoding of a
ragged batch in one jaxspec program matches transformers' generate row by row
(stopping at near-ties, as in tests/test_hf_parity.py); the cross K/V are
computed once by `start` and only read by `forward`; and HF → jaxspec → HF is
a lossless round trip that transformers loads.
"""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from jaxspec import UnsupportedModelError, load, save, score
from jaxspec.generate import generate
from models import T5Gemma
from tests.hf_factory import VOCAB
from tests.hf_t5gemma_factory import EOS, make_t5gemma
from tests.hf_oracle import assert_greedy_matches

LOGPROB_TOL = 1e-4
# Longer than both sliding windows (3 in the encoder, 4 in the decoder), and ragged.
SOURCE_LENGTHS = (11, 4, 7, 1)
TARGET_LENGTHS = (9, 12, 3, 6)
MAX_NEW = 16


def _tokens(seed: int, lengths) -> list[list[int]]:
    rs = np.random.RandomState(seed)
    return [rs.randint(3, VOCAB, size=n).tolist() for n in lengths]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("t5gemma")
    hf = make_t5gemma(path)
    lm = load(path)
    assert isinstance(lm.model, T5Gemma)
    return hf, lm


def _hf_logits(hf, source, decoder_input):
    with torch.no_grad():
        return hf(
            input_ids=torch.tensor([source]),
            attention_mask=torch.ones(1, len(source), dtype=torch.long),
            decoder_input_ids=torch.tensor([decoder_input]),
        ).logits[0].double()


def test_logprobs_match(pair):
    hf, lm = pair
    sources, targets = _tokens(0, SOURCE_LENGTHS), _tokens(1, TARGET_LENGTHS)
    ours = score(lm.model, lm.params, sources, targets)
    start = lm.model.config.decoder_start_token_id
    worst = 0.0
    for source, target, row in zip(sources, targets, ours):
        logits = _hf_logits(hf, source, [start] + target[:-1])
        ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(target)[:, None])[:, 0].numpy()
        got = np.array(row["logprobs"], float)
        worst = max(worst, float(np.max(np.abs(got - ref))))
        np.testing.assert_allclose(got, ref, atol=LOGPROB_TOL, rtol=0)
        assert row["argmax"] == logits.argmax(-1).tolist()
    print(f"max |logprob error| = {worst:.2e}")


def test_greedy_generation_matches(pair):
    hf, lm = pair
    assert lm.eos_ids == (EOS,)
    sources = _tokens(2, SOURCE_LENGTHS)
    ours = generate(lm.model, lm.params, sources, max_new_tokens=MAX_NEW, stop_ids=lm.eos_ids)
    assert_greedy_matches(hf, sources, ours, MAX_NEW, [EOS])


def _poison_cross_kv(params):
    """The same params with every decoder layer's cross-attention K/V projections set to NaN."""

    def poison(path, x):
        names = [k.key for k in path]
        return jnp.full_like(x, jnp.nan) if "cross_attn" in names and names[-2] in ("k_proj", "v_proj") else x

    return jax.tree_util.tree_map_with_path(poison, params)


def test_cross_kv_computed_once(pair):
    """After `start`, forward never touches the cross K/V weights: NaN them and nothing changes."""
    _, lm = pair
    model, params = lm.model, lm.params
    sources = _tokens(3, SOURCE_LENGTHS)
    width = max(SOURCE_LENGTHS)
    src = jnp.asarray([s + [0] * (width - len(s)) for s in sources], jnp.int32)
    start = jax.jit(model.start, static_argnames="new_slots")(params, src, jnp.asarray(SOURCE_LENGTHS), new_slots=4)
    window = jnp.concatenate([start.tokens, jnp.asarray(_tokens(4, (2,) * len(sources)), jnp.int32)], axis=1)
    positions = jnp.broadcast_to(jnp.arange(3), window.shape)
    forward = jax.jit(model.forward)
    clean = forward(params, window, positions, start.cache).logits
    poisoned = forward(_poison_cross_kv(params), window, positions, start.cache).logits
    assert np.all(np.isfinite(np.asarray(clean)))
    np.testing.assert_array_equal(np.asarray(clean), np.asarray(poisoned))
    # The same window teacher-forced (encoder and cross K/V recomputed) gives the same logits.
    teacher_forced = jax.jit(model.sequence_logits)(params, window, src, jnp.asarray(SOURCE_LENGTHS))
    np.testing.assert_allclose(np.asarray(clean), np.asarray(teacher_forced), atol=1e-5)


def test_round_trip_hf_jaxspec_hf(pair, tmp_path):
    hf, lm = pair
    save(lm, tmp_path / "js")
    js = load(tmp_path / "js")
    assert js.format == "jaxspec"
    save(js, tmp_path / "back", to="hf")
    a, b = load_file(str(lm.source / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert set(a) - lm.model.hf_aliases == set(b)
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    back = transformers.T5GemmaForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    source, decoder_input = _tokens(5, (6,))[0], [lm.model.config.decoder_start_token_id, 7, 8]
    assert torch.equal(_hf_logits(back, source, decoder_input), _hf_logits(hf, source, decoder_input))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["encoder"].update(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}),
         "T5Gemma encoder: rope type 'yarn' is not supported"),
        (lambda c: c["decoder"].update(layer_types=["chunked_attention"] * 3), "T5Gemma decoder: layer type"),
        (lambda c: c["decoder"].update(vocab_size=VOCAB + 1), "vocabularies differ"),
        (lambda c: c.pop("encoder"), "lacks its 'encoder' sub-config"),
    ],
)
def test_unsupported_configs_are_refused_by_name(pair, tmp_path, edit, message):
    _, lm = pair
    for f in lm.source.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    edit(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match=re.escape(message)):
        load(tmp_path)
