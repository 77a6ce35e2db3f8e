"""Token recycling: greedy output equals plain greedy, sampled output equals plain sampling, and the table.

Random models with sharp logits fall into cycles, where the target's own
top-k successors are right most of the time: steps accept deep paths, and the
table's bookkeeping (prompt seeding, duplicate tokens in a window, hot start)
decides what gets drafted.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import SamplingConfig
from jaxspec.generate import generate
from jaxspec.cli import main
from jaxspec.drafters.base import Verified
from jaxspec.drafters.token_recycling import TokenRecycling
from jaxspec.errors import InputError
from jaxspec.draft_sizing import DraftSizing
from jaxspec.methods import auto_sizing, build_drafter, rank_accuracy
from jaxspec.static_tree import StaticTree, node_accuracy
from tests.hf_factory import make_hf_model
from tests.random_models import VOCAB, random_model, random_t5gemma


def _recycling(vocab, batch=1, size=16, sampling=SamplingConfig(), **kw):
    return build_drafter("token-recycling", batch=batch, sampling=sampling, target_vocab=vocab, tree_size=size, **kw)


@pytest.mark.parametrize("window", [None, 3])
def test_greedy_recycling_equals_plain_greedy(window):
    model, params = random_model(21, 2, 32, 4, 2, window, scale=8.0)
    rs = np.random.RandomState(1)
    prompts = [rs.randint(0, VOCAB, size=n).tolist() for n in (9, 2, 14)]
    plain = generate(model, params, prompts, max_new_tokens=40)
    stop = plain[1].output_ids[20]
    plain = generate(model, params, prompts, max_new_tokens=40, stop_ids=[stop])
    drafter, dparams = _recycling(VOCAB, 3)
    fast = generate(model, params, prompts, max_new_tokens=40, stop_ids=[stop], drafter=drafter, drafter_params=dparams)
    for a, b in zip(plain, fast):
        assert b.output_ids == a.output_ids
        assert sum(b.accept_lengths) == len(b.output_ids)
    assert max(max(g.accept_lengths) for g in fast) >= 2


def test_encoder_decoder_recycling_equals_plain_greedy():
    model, params = random_t5gemma(5, 2, 8.0)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12]]
    plain = generate(model, params, prompts, max_new_tokens=24)
    drafter, dparams = _recycling(model.vocab_size, 2, 8)
    fast = generate(model, params, prompts, max_new_tokens=24, drafter=drafter, drafter_params=dparams)
    assert [g.output_ids for g in fast] == [g.output_ids for g in plain]
    assert max(max(g.accept_lengths) for g in fast) >= 2


def test_sampled_recycling_emits_what_plain_sampling_emits():
    """Point-mass drafts: the tree rule takes the target's own draw per position, so a row's tokens equal
    plain sampling's for its seed, in a batch or alone."""
    model, params = random_model(22, 2, 32, 4, 2, scale=3.0)
    prompts = [[1, 2, 3, 1, 2, 3, 1, 2], [7, 8], [4, 4, 4, 4]]
    sampling = SamplingConfig(temperature=0.7, top_k=6)
    drafter, _ = _recycling(VOCAB, 3, 16, sampling)
    fast = generate(model, params, prompts, max_new_tokens=30, sampling=sampling, seed=[5, 6, 7], drafter=drafter)
    plain = generate(model, params, prompts, max_new_tokens=30, sampling=sampling, seed=[5, 6, 7])
    assert [g.output_ids for g in fast] == [g.output_ids for g in plain]
    assert max(max(g.accept_lengths) for g in fast) >= 2


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_recycling_sized_per_step_emits_plain_decodings_tokens(temperature):
    """Each step verifies the prefix of the tree that pays: all of it where verifying is free, none where
    it is dear, a varying prefix in between; the tokens are plain decoding's in every case."""
    model, params = random_model(21, 2, 32, 4, 2, scale=8.0)
    rs = np.random.RandomState(3)
    prompts = [rs.randint(0, VOCAB, size=n).tolist() for n in (9, 2, 14)]
    sampling = SamplingConfig(temperature=temperature)
    run = lambda **kw: generate(model, params, prompts, max_new_tokens=32, sampling=sampling, seed=[1, 2, 3], **kw)  # noqa: E731
    plain = run()
    drafter, dparams = _recycling(VOCAB, 3, 16, sampling)
    whole = run(drafter=drafter, drafter_params=dparams)
    prior = node_accuracy(drafter.tree, rank_accuracy("token-recycling"))
    free, dear, middle = ((1.0,) * 17, tuple(1.0 + 10 * k for k in range(17)), tuple(1.0 + 0.08 * k for k in range(17)))
    sized = {name: run(drafter=drafter, drafter_params=dparams, sizing=DraftSizing(cost, node_prior=prior))
             for name, cost in (("free", free), ("dear", dear), ("middle", middle))}
    for out in (whole, *sized.values()):
        assert [g.output_ids for g in out] == [g.output_ids for g in plain]
    assert [g.target_calls for g in sized["free"]] == [g.target_calls for g in whole]
    assert [g.target_calls for g in sized["dear"]] == [g.new_tokens for g in sized["dear"]]
    assert max(max(g.accept_lengths) for g in sized["middle"]) >= 2


def _verified(drafter, window, logits, path, n_accepted, scored):
    """What the loop hands update: the drafter's row summary made from the logits, as the verify makes it."""
    b, w1 = window.shape
    logits = jnp.asarray(logits)
    return Verified(jnp.asarray(n_accepted), jnp.zeros((b,), jnp.int32), jnp.asarray(path), jnp.zeros((b, w1, 1)),
                    jnp.asarray(window), logits, jnp.asarray(scored), drafter.row_summary(logits))


def test_table_update_prefers_the_accepted_path_then_the_latest_index():
    vocab, width = 6, 2
    drafter = TokenRecycling(StaticTree((-1, -1, 0), (1, 1, 2), (0, 1, 0)), vocab, width)
    state = drafter.init(None, jnp.asarray([[0, 0]]), jnp.asarray([1]), 4, None)
    # Window tokens 3, 4, 3, 4: token 3 sits at index 0 (the root, on the path) and 2; token 4 at
    # 1 (accepted) and 3 (not scored).
    window = np.asarray([[3, 4, 3, 4]])
    logits = np.zeros((1, 4, vocab), np.float32)
    for i, best in enumerate([(1, 2), (5, 0), (2, 1), (0, 5)]):
        logits[0, i, best[0]], logits[0, i, best[1]] = 2.0, 1.0
    verified = _verified(drafter, window, logits, [[0, 1, 0, 0]], [1], [[True, True, True, False]])
    state = drafter.update(None, state, None, verified)
    table, known = np.asarray(state.table[0]), np.asarray(state.known[0])
    assert table[3].tolist() == [1, 2] and table[4].tolist() == [5, 0]
    assert known.tolist() == [0, 0, 0, 2, 2, 0]
    # Token 5 at indices 2 and 3, both off the path: the later index wins.
    verified = _verified(drafter, np.asarray([[3, 4, 5, 5]]), logits, [[0, 0, 0, 0]], [0], [[True, True, True, True]])
    assert np.asarray(drafter.update(None, state, None, verified).table[0, 5]).tolist() == [0, 5]


def test_prompt_bigrams_seed_rank_zero_and_carry_merges_the_rows():
    vocab = 8
    drafter = TokenRecycling(StaticTree((-1,), (1,), (0,)), vocab, 2)
    prompts = jnp.asarray([[1, 2, 1, 3, 0], [5, 6, 0, 0, 0]])
    state = drafter.init(None, prompts, jnp.asarray([4, 2]), 4, None)
    assert np.asarray(state.table[0, 1, 0]) == 3  # the last occurrence of 1 is followed by 3
    assert np.asarray(state.known).tolist() == [[0, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0, 0]]
    table, known = drafter.carry(state)
    assert np.asarray(known).tolist() == [0, 1, 1, 0, 0, 1, 0, 0]
    assert np.asarray(table[:, 0]).tolist()[1:6] == [3, 1, 0, 0, 6]
    again = drafter.init((table, known), jnp.asarray([[7, 7]]), jnp.asarray([1]), 4, None)  # a hot start
    assert np.asarray(again.table[0, 5, 0]) == 6 and np.asarray(again.known[0, 5]) == 1


def test_a_hot_table_drafts_from_the_first_step():
    model, params = random_model(23, 2, 32, 4, 2, scale=8.0)
    prompt = [[9, 3, 17]]
    drafter, _ = _recycling(VOCAB, 1, 16)
    box = []
    cold = generate(model, params, prompt, max_new_tokens=30, drafter=drafter, drafter_state_to=box.append)[0]
    hot = generate(model, params, prompt, max_new_tokens=30, drafter=drafter, drafter_params=drafter.carry(box[0]))[0]
    assert hot.output_ids == cold.output_ids
    assert hot.target_calls < cold.target_calls
    assert hot.accept_lengths[0] > 1


def test_bad_recycling_settings_are_clear():
    with pytest.raises(InputError, match="tree size must be >= 1"):
        _recycling(VOCAB, 1, 0)
    with pytest.raises(InputError, match=r"successor table is \(4, 8\), but this target needs \(64, 8\)"):
        _recycling(VOCAB, 1, 4, successors=(jnp.zeros((4, 8), jnp.int32), jnp.zeros((4,), jnp.int32)))


@pytest.mark.parametrize("method", ["token-recycling", "ngram-trie"])
def test_cli_tree_size_auto_sizes_the_largest_tree_per_step(tmp_path, capsys, method):
    """--tree-size auto drafts the 32-node tree with a per-step sizing from the measured cost curve, and the
    output stays plain decoding's."""
    model = tmp_path / "llama"
    make_hf_model("llama", model, num_hidden_layers=1)
    base = ["generate", "--model", str(model), "--prompt-ids", "5,6,7,5,6,7,5", "--max-new-tokens", "16", "--json"]
    assert main(base + ["--method", "autoregressive"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(base + ["--method", method, "--tree-size", "auto"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["output_ids"] == plain["output_ids"]
    assert "trees of up to 32 nodes, each step's prefix sized" in err


def test_cli_keeps_the_successor_table_between_calls(tmp_path, capsys):
    model = tmp_path / "llama"
    make_hf_model("llama", model, num_hidden_layers=1)
    table = tmp_path / "successors.npz"
    args = ["generate", "--model", str(model), "--prompt-ids", "5,6,7,5,6", "--max-new-tokens", "12", "--json",
            "--method", "token-recycling", "--tree-size", "8", "--successor-table", str(table)]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert table.exists() and not list(tmp_path.glob(".successors*"))
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["output_ids"] == first["output_ids"]
    saved = np.load(table)["known"].sum()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt_ids": [9, 10, 11, 9, 10]}\n')
    benched = ["bench", "--model", str(model), "--prompts", str(prompts), "--max-new-tokens", "12",
               "--methods", "token-recycling", "--tree-size", "8", "--successor-table", str(table), "--repeats", "1",
               "--max-other-load", "1"]
    assert main(benched) == 0  # the bench saves the table too: its prompt's successors join it
    capsys.readouterr()
    assert np.load(table)["known"].sum() > saved
    table.write_text("not a table")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not a successor table" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_auto_sizing_starts_from_the_hit_rates_of_the_sampling_mode(monkeypatch, tmp_path, temperature):
    """Under sampling a point-mass draft is accepted when the target's draw equals it, less often than its
    argmax does: the sized tree's prior is the sampled hit rates'."""
    monkeypatch.setenv("JAXSPEC_CACHE", str(tmp_path))
    model, params = random_model(0, 2, 32, 4, 2)
    sampling = SamplingConfig(temperature=temperature)
    drafter, _ = _recycling(model.vocab_size, size=16, sampling=sampling)
    sizing = auto_sizing("token-recycling", "auto", drafter, model, params, 1, sampled=not sampling.greedy)
    assert sizing.node_prior == node_accuracy(drafter.tree, rank_accuracy("token-recycling", temperature > 0))
    assert (sizing.node_prior[0] < 0.5) == (temperature > 0)
