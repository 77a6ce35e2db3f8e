"""T5 (models/t5.py) against Hugging Face transformers (torch CPU) on tiny random v1.0 and v1.1 models.

Encoder inputs are ragged and longer than the relative-position max distance,
so padding, the logarithmic buckets and the saturated last bucket all bite.
jaxspec runs each ragged batch as one batch; transformers runs it row by row.
Where transformers' top-2 logit gap is under 1e-4 the greedy choice is a coin
toss between implementations, so the comparison stops there.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file
from transformers.models.t5.modeling_t5 import T5Attention

from jaxspec import UnsupportedModelError, load, save
from jaxspec.generate import generate
from jaxspec.decode_loop import decode_jit
from models import ModelConfigError, T5Model, build_model
from models.t5 import relative_buckets
from tests.hf_seq2seq_factory import BASE, FAMILIES, RELEASED_STYLE, VOCAB, make_t5
from tests.hf_oracle import assert_greedy_matches

LOGPROB_TOL = 1e-4
SOURCE_LENGTHS = (31, 5, 26, 1)  # the factory's max distances are 20 and 24
TARGET_LENGTHS = (9, 30, 1, 14)  # 30: decoder distances saturate too
MAX_NEW = 24


def _rows(seed: int, lengths) -> list[list[int]]:
    rs = np.random.RandomState(seed)
    return [rs.randint(2, VOCAB, size=n).tolist() for n in lengths]


def _pad(rows) -> tuple[jax.Array, jax.Array]:
    out = np.zeros((len(rows), max(map(len, rows))), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return jnp.asarray(out), jnp.asarray([len(r) for r in rows], jnp.int32)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """On tiny models torch's thread pool only adds contention: a generate call on 2 busy cores takes
    seconds with it and 0.1 s without."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=sorted([*FAMILIES, *RELEASED_STYLE]))
def t5(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    hf = make_t5(request.param, path)
    return request.param, hf, load(path)


@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 20), (16, 24)])
def test_relative_buckets_match_transformers(num_buckets, max_distance):
    rel = torch.arange(-3 * max_distance, 3 * max_distance)
    for bidirectional in (True, False):
        ref = T5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance).numpy()
        ours = np.asarray(relative_buckets(jnp.asarray(rel.numpy()), bidirectional, num_buckets, max_distance))
        np.testing.assert_array_equal(ours, ref)


def test_teacher_forced_logprobs_match(t5):
    family, hf, lm = t5
    assert isinstance(lm.model, T5Model) and lm.model.is_encoder_decoder
    sources, targets = _rows(0, SOURCE_LENGTHS), _rows(1, TARGET_LENGTHS)
    start = lm.model.config.decoder_start_token_id
    src, src_len = _pad(sources)
    dec, _ = _pad([[start] + t[:-1] for t in targets])
    logits = jax.jit(lm.model.sequence_logits)(lm.params, dec, src, src_len)
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
    worst = 0.0
    for i, (s, t) in enumerate(zip(sources, targets)):
        with torch.no_grad():
            ref_logits = hf(input_ids=torch.tensor([s]), decoder_input_ids=torch.tensor([[start] + t[:-1]])).logits[0]
        ref = torch.log_softmax(ref_logits.double(), -1).numpy()
        ours = logp[i, : len(t)]
        worst = max(worst, float(np.max(np.abs(ours - ref))))
        np.testing.assert_allclose(ours, ref, atol=LOGPROB_TOL, rtol=0)
    print(f"{family}: max |logprob error| over the vocabulary = {worst:.2e}")


ENCODER_CALLS = []


@dataclasses.dataclass(frozen=True)
class _CountingT5(T5Model):
    """T5Model that notes every time the encoder is traced."""

    def encode(self, params, src, src_len):
        ENCODER_CALLS.append(src.shape)
        return super().encode(params, src, src_len)


def test_greedy_generation_matches(t5):
    _, hf, lm = t5
    sources = _rows(2, SOURCE_LENGTHS)
    ENCODER_CALLS.clear()
    decode_jit.clear_cache()  # another family with an equal config may have compiled this program already
    model = _CountingT5(lm.model.config, lm.model.dtype)
    ours = generate(model, lm.params, sources, max_new_tokens=MAX_NEW, stop_ids=lm.eos_ids)
    # The whole generate program traced the encoder once: in `start`, not in the loop body.
    assert len(ENCODER_CALLS) == 1
    # transformers 5 sizes its decoder cache by the encoder's depth, and the factory's stacks differ.
    assert_greedy_matches(hf, sources, ours, MAX_NEW, lm.eos_ids, use_cache=False)


def _poison(params, hit) -> dict:
    """params with every leaf whose path `hit` accepts replaced by NaN."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full_like(x, jnp.nan) if hit([k.key for k in path]) else x, params
    )


def test_cross_attention_kv_computed_once(t5):
    """After `start`, forward reads neither the encoder nor the cross-attention K/V projections."""
    _, _, lm = t5
    model, params = lm.model, lm.params
    src, src_len = _pad(_rows(3, SOURCE_LENGTHS))
    start = jax.jit(model.start, static_argnames="new_slots")
    cache = start(params, src, src_len, new_slots=4).cache
    tokens = jnp.asarray(np.random.RandomState(4).randint(2, VOCAB, size=(len(SOURCE_LENGTHS), 3)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(3, dtype=jnp.int32), tokens.shape)
    poisoned = _poison(params, lambda p: p[0] == "encoder" or ("EncDecAttention" in p and p[-2] in ("k", "v")))
    forward = jax.jit(model.forward)
    clean = forward(params, tokens, positions, cache).logits
    assert np.all(np.isfinite(clean))
    np.testing.assert_array_equal(forward(poisoned, tokens, positions, cache).logits, clean)
    # The poison bites where the encoder and the projections do run.
    assert all(np.all(np.isnan(k)) for k in start(poisoned, src, src_len, new_slots=4).cache.cross_keys)


def test_round_trip_hf_jaxspec_hf(t5, tmp_path):
    family, hf, lm = t5
    save(lm, tmp_path / "js", to="jaxspec")
    js = load(tmp_path / "js")
    assert js.format == "jaxspec"
    jax.tree_util.tree_map(np.testing.assert_array_equal, js.params, lm.params)
    save(js, tmp_path / "hf", to="hf")
    original = load_file(str(lm.source / "model.safetensors"))
    back = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert set(back) <= set(original) and set(original) - set(back) <= lm.model.hf_aliases
    for name, value in back.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    theirs, ours = hf.state_dict(), reloaded.state_dict()
    assert set(theirs) == set(ours)
    for name in theirs:
        assert torch.equal(theirs[name], ours[name]), name
    assert reloaded.config.scale_decoder_outputs == hf.config.scale_decoder_outputs


def test_unsupported_options_are_refused(t5, tmp_path):
    _, _, lm = t5
    cfg = json.loads((lm.source / "config.json").read_text())
    with pytest.raises(ModelConfigError, match="feed_forward_proj 'gated-swiglu'"):
        build_model({**cfg, "feed_forward_proj": "gated-swiglu"})
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "relative_attention_max_distance": 2}))
    with pytest.raises(UnsupportedModelError, match="relative_attention_max_distance=2"):
        load(tmp_path)


def test_head_and_scaling_follow_transformers_5():
    """Scaling: the saved scale_decoder_outputs, else tie_word_embeddings (absent counts as true); never
    for mT5. The head: tied exactly when the checkpoint holds no lm_head.weight."""
    cfg = {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", **BASE}

    def scaled(**extra) -> bool:
        return build_model({**cfg, **extra}).config.scale_decoder_outputs

    assert scaled() and scaled(tie_word_embeddings=True) and not scaled(tie_word_embeddings=False)
    assert not scaled(tie_word_embeddings=True, scale_decoder_outputs=False)
    assert scaled(tie_word_embeddings=False, scale_decoder_outputs=True)
    assert not scaled(architectures=["MT5ForConditionalGeneration"], model_type="mt5")
    model = build_model(cfg)
    assert model.for_checkpoint({"shared.weight"}).config.tie_word_embeddings
    assert not model.for_checkpoint({"shared.weight", "lm_head.weight"}).config.tie_word_embeddings


def test_each_factory_style_loads_as_transformers_runs_it(t5):
    family, hf, lm = t5
    assert lm.model.config.scale_decoder_outputs == hf.config.scale_decoder_outputs
    untied = hf.lm_head.weight.data_ptr() != hf.shared.weight.data_ptr()
    assert lm.model.config.tie_word_embeddings == (not untied)
    assert (family, untied) in {("t5_v1_0", False), ("t5_v1_1_fresh", False), ("t5_v1_1", True), ("t5_v1_1_released", True)}


