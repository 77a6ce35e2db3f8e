"""HAT: teacher-forced vs step-by-step consistency with rows mid-word at different places, the backbone
counted once per completed word, decoding through the one engine, its checkpoint directory, text in and
out at the CLI, and its bad inputs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxspec import InputError
from jaxspec.cli import main
from jaxspec.generate import generate
from jaxspec.hf_io import save_hf
from jaxspec.loading import load
from jaxspec.sampling import SamplingConfig, target_distribution
from models import ModelConfigError, build_model
from models.hat_words import EOS, split_words

from tests.hat_factory import hat_config, tiny_hat
from tests.test_block_transformer import _padded

CAP = 6  # the factory's max_word_bytes

TEXTS = [
    b"The quick brown fox, jumping over camelCase words.",
    b"a",
    b"Hello wor",
    b"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xff raw",
    b"x" * 17,
]


def test_step_by_step_logits_equal_the_teacher_forced_forward_and_the_backbone_runs_once_per_word():
    """Ragged prompts ending mid-word at different places (and at a word's first byte); every step's
    next-byte logits equal the full forward's (1e-5), and after each step the backbone's cache holds one
    entry per word completed, as the pure splitter counts them."""
    model, params, _ = tiny_hat()
    cut = [9, 1, 3, 5, 7]
    prompts = [t[:c] for t, c in zip(TEXTS, cut)]
    steps = 10
    rng = np.random.default_rng(0)
    full = [t + bytes(rng.integers(97, 123, 20).tolist()) for t in TEXTS]
    sequences, _ = _padded(full)
    want = model.sequence_logits(params, sequences)  # want[:, j] scores byte j + 1
    tokens, prompt_len = _padded(prompts)
    cache = jax.jit(model.start, static_argnums=3)(params, tokens, prompt_len, steps + 4).cache
    step, close = jax.jit(model.step_in_unit), jax.jit(model.close_units)
    n = np.asarray(prompt_len)
    rows = np.arange(len(prompts))
    for _ in range(steps):
        np.testing.assert_allclose(cache.logits, want[rows, n - 1], atol=1e-5, rtol=0)
        words = [len(split_words(f[:k], CAP)) - 1 for f, k in zip(full, n)]
        np.testing.assert_array_equal(cache.words.lengths, words)
        cache = step(params, sequences[rows, n], cache, jnp.ones(len(rows), bool))
        n = n + 1
        cache = close(params, cache, model.unit_full(cache))
    np.testing.assert_array_equal(cache.lengths, n)


def _sharp(seed):
    model, params, _ = tiny_hat(seed=seed)
    return model, jax.tree_util.tree_map(lambda x: x * 3, params)  # no near-ties in argmax


def test_greedy_generation_is_the_argmax_chain_and_stops_mid_word():
    model, params = _sharp(3)
    prompts = [list(t[:k]) for t, k in zip(TEXTS, [12, 1, 9, 6, 17])]
    gens = generate(model, params, prompts, max_new_tokens=24)
    sequences, _ = _padded([bytes(g.prompt_ids + g.output_ids) for g in gens])
    argmax = np.asarray(jnp.argmax(model.sequence_logits(params, sequences), axis=-1))
    for i, g in enumerate(gens):
        p = len(g.prompt_ids)
        assert len(g.output_ids) == 24
        assert g.output_ids == argmax[i, p - 1 : p + 23].tolist()
        # An outer step draws the rest of a word and the next word's first byte, or less when the step closes
        # early (half of the rows wait) and the row goes on in the next one.
        assert sum(g.accept_lengths) == 24 and all(1 <= n <= CAP for n in g.accept_lengths)
    # A stop token drawn mid-word ends each row there (the stop table is traced: the same program runs).
    stop = gens[0].output_ids[3]
    stopped = generate(model, params, prompts, max_new_tokens=24, stop_ids=[stop])
    for g, s in zip(gens, stopped):
        cut = g.output_ids.index(stop) + 1 if stop in g.output_ids else len(g.output_ids)
        assert s.output_ids == g.output_ids[:cut]


def test_a_row_samples_as_it_does_alone():
    model, params = _sharp(5)
    prompts = [list(b"Hello"), list(b"ab cd"), list(b"z")]
    sampling = SamplingConfig(temperature=1.0, top_p=0.9)
    batch = generate(model, params, prompts, max_new_tokens=12, sampling=sampling, seed=[7, 8, 9])
    alone = generate(model, params, prompts[1:2], max_new_tokens=12, sampling=sampling, seed=[8])
    assert batch[1].output_ids == alone[0].output_ids


def test_sampled_pairs_across_a_word_boundary_follow_the_model():
    """Top-4 sampling after "a!": whether the first new byte begins a word (then the backbone reads "a!"
    before the second is drawn) or not, the joint distribution of the two bytes over 4000 seeds matches
    the model's (chi-square, counts pooled where expected < 5)."""
    model, params, _ = tiny_hat(seed=11)
    sampling = SamplingConfig(temperature=1.0, top_k=4)
    prompt = list(b"a!")
    n = 4000
    gens = generate(model, params, [prompt] * n, max_new_tokens=2, sampling=sampling, seed=list(range(n)))
    pairs = np.array([g.output_ids for g in gens])
    v = model.vocab_size
    counts = np.bincount(pairs[:, 0] * v + pairs[:, 1], minlength=v * v)
    first = target_distribution(model.sequence_logits(params, jnp.asarray([prompt]))[:, -1:], sampling)[0, 0]
    drawn = np.flatnonzero(np.asarray(first) > 0)
    seconds = jnp.asarray([prompt + [a] for a in drawn])
    second = target_distribution(model.sequence_logits(params, seconds)[:, -1:], sampling)[:, 0]
    joint = np.zeros((v, v))
    joint[drawn] = np.asarray(second, np.float64)
    expected = (np.asarray(first, np.float64)[:, None] * joint).reshape(-1) * n
    assert counts[expected == 0].sum() == 0  # nothing outside top-k is ever drawn
    begins = [split_words(bytes(prompt + [a]), CAP)[-1] == bytes([a]) for a in drawn]
    assert any(begins) and not all(begins)  # pairs cross a word boundary and pairs stay inside a word
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expect = np.append(expected[big], expected[~big].sum())
    keep = expect > 0
    p_value = stats.chisquare(observed[keep], expect[keep] * observed.sum() / expect[keep].sum()).pvalue
    assert p_value > 1e-3, p_value


def test_checkpoint_directory_text_in_and_out_at_the_cli(tmp_path, capsys):
    model, params, cfg = tiny_hat(seed=2)
    save_hf(tmp_path / "hat", model, params, cfg, {}, "float32")
    assert not (tmp_path / "hat" / "tokenizer.json").exists()
    loaded = load(tmp_path / "hat")
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), loaded.params, params))
    want = generate(model, params, [list(b"Hi there")], max_new_tokens=8, stop_ids=[EOS])[0]
    assert main(["generate", "--model", str(tmp_path / "hat"), "--prompt", "Hi there", "--max-new-tokens", "8", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["prompt_ids"] == list(b"Hi there") and row["output_ids"] == want.output_ids
    assert row["text"] == bytes(b for b in want.output_ids if b < 256).decode("utf-8", "replace")
    # --stop TEXT: the output ends at the first place its new bytes end with TEXT's bytes.
    new = bytes(b for b in want.output_ids if b < 256)
    stop = new[3:5]
    argv = ["generate", "--model", str(tmp_path / "hat"), "--prompt", "Hi there", "--max-new-tokens", "8", "--json"]
    assert main([*argv, "--stop", stop.decode("utf-8", "surrogateescape")]) == 0  # any bytes, as argv carries them
    assert bytes(json.loads(capsys.readouterr().out)["output_ids"]) == new[: new.index(stop) + 2]
    # Bytes that are not UTF-8 (a command-line argument carries them as escaped surrogates) are taken as bytes.
    raw = b"ab\xffc d".decode("utf-8", "surrogateescape")
    assert main(["score", "--model", str(tmp_path / "hat"), "--prompt", raw]) == 0
    scored = json.loads(capsys.readouterr().out)
    data = list(b"ab\xffc d")
    assert scored["prompt_ids"] == data
    logits = model.sequence_logits(params, jnp.asarray([data]))[0]
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    assert scored["logprobs"][0] is None
    np.testing.assert_allclose(scored["logprobs"][1:], logp[np.arange(5), data[1:]], atol=1e-5)
    assert scored["argmax"] == np.argmax(logp, axis=-1).tolist()


def test_bad_configs_and_requests_are_clear_errors():
    with pytest.raises(ModelConfigError, match="vocabulary is the 256 bytes"):
        build_model({**hat_config(), "vocab_size": 300})
    with pytest.raises(ModelConfigError, match="must equal the encoder's"):
        build_model({**hat_config(), "decoder": {**hat_config()["decoder"], "hidden_size": 64}})
    with pytest.raises(ModelConfigError, match="connector_heads 3 must divide"):
        build_model({**hat_config(), "connector_heads": 3})
    model, params, _ = tiny_hat(max_positions=32)
    with pytest.raises(InputError, match="exceeds the model's 32 positions"):
        generate(model, params, [[97] * 30], max_new_tokens=4, max_positions=model.max_positions)
    from jaxspec.drafters.prompt_lookup import PromptLookup

    with pytest.raises(InputError, match="only the autoregressive method"):
        generate(model, params, [[97, 98]], max_new_tokens=4, drafter=PromptLookup(num_draft_tokens=3))
    assert EOS in model.config.eos_token_ids
