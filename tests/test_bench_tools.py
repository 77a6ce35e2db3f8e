"""What the benches stand on: the forward-cost measurement, the load-aware timer, and docs tables that match
the committed summaries."""

from __future__ import annotations

import json

import pytest

from bench import device_profile, docs_tables, step_profile, summaries, vocab_reduce
from jaxspec.cost_model import measure_forward_cost
from jaxspec.machine_load import timed
from tests.random_models import random_model, random_t5gemma


@pytest.mark.parametrize("kind", ["decoder-only", "encoder-decoder"])
def test_forward_cost_curve_has_one_median_per_width(kind):
    model, params = random_model(0, 2, 32, 4, 2) if kind == "decoder-only" else random_t5gemma(0, 1, 1.0)
    curve = measure_forward_cost(model, params, widths=(5, 1, 2, 5), batch_size=2, context=12, repeats=3)
    assert curve.widths == (1, 2, 5) and curve.batch_size == 2 and curve.context == 12
    assert all(s > 0 for s in curve.seconds)
    assert curve.relative()[0] == 1.0 and len(curve.relative()) == 3


def test_timed_returns_the_value_and_a_share_of_the_cores():
    t = timed(lambda: sum(range(1000)), max_other_load=1.0, patience=0.0)
    assert t.value == 499500 and t.seconds >= 0 and 0.0 <= t.other_load


def test_timed_redoes_a_disturbed_call_up_to_its_attempts():
    calls = []
    # No share is below -1: every try counts as disturbed, so all attempts run and the last is kept.
    t = timed(lambda: calls.append(1) or len(calls), max_other_load=-1.0, patience=0.0, attempts=3)
    assert t.value == 3


def test_docs_tables_are_rendered_from_the_committed_summaries():
    text = docs_tables.DOCS.read_text()
    names = docs_tables.BLOCK.findall(text)
    assert names, "docs/benchmarks.md has no generated tables"
    assert docs_tables.rebuild(text) == text, "run python -m bench.docs_tables after a bench run with --summary"


def test_device_profile_measures_cost_decoding_and_projects_speedups(tmp_path, capsys):
    tiny = '{"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, ' \
           '"num_key_value_heads": 1, "head_dim": 32, "vocab_size": 512}'
    out = tmp_path / "profile.json"
    device_profile.main([
        "--models", "gemma3-270m,llama-100m", "--batches", "1,2", "--widths", "1,2,9", "--repeats", "2",
        "--new-tokens", "4", "--bandwidth-gib", "0.01", "--override", tiny, "--out", str(out), "--markdown",
        "--per-call", "3",
    ])
    result = json.loads(out.read_text())
    assert result["backend"] == "cpu" and result["read_bandwidth_gb_s"] > 0 and result["per_call"] == 3
    assert [(r["model"], r["batch"]) for r in result["rows"]] == [
        ("gemma3-270m", 1), ("gemma3-270m", 2), ("llama-100m", 1), ("llama-100m", 2)
    ]
    assert all(r["widths"] == [1, 2, 9] and r["relative"][0] == 1.0 and r["tokens_per_s"] > 0 for r in result["rows"])
    # Of the widths measured, only c(9) prices a CPU run: prompt lookup's K = 8, per real-text category.
    categories = {r["prompts"] for r in summaries.read("real_text")["rows"]}
    assert {(p["method"], p["category"]) for p in result["projected"]} == {("prompt-lookup", c) for c in categories}
    assert "| prompt-lookup | 1 | 0.0 | " in capsys.readouterr().out
    # Runs split to fit a device's time limit merge into one result, projected again.
    merged = device_profile.merge_results([out, out])
    assert merged["rows"] == result["rows"] * 2 and merged["projected"] == result["projected"]
    assert merged["commands"] == [result["command"]] * 2
    other = tmp_path / "bfloat16.json"
    other.write_text(json.dumps(dict(result, dtype="bfloat16")))
    with pytest.raises(SystemExit, match="one device in one dtype"):
        device_profile.merge_results([out, other])


def test_device_projection_prices_each_method_at_its_verify_width():
    flat = {w: 1.0 + 0.1 * (w - 1) for w in range(1, 64)}
    projected = device_profile.projected_speedups({1: flat, 8: flat})
    methods = {p["method"] for p in projected}
    assert {"prompt-lookup", "token-recycling-16", "lookahead-4", "jacobi-4", "early-exit-4"} <= methods
    assert not any(m.startswith("autoregressive") or m.endswith("-auto") for m in methods)
    settings = summaries.read("training_free")["settings"]
    for p in projected:
        assert p["verify_cost"] == flat[p["verify_width"]]
        assert p["projected_speedup"] == pytest.approx(p["tokens_per_call"] / (p["verify_cost"] + p["drafting_cost"]))
        if p["method"] == "lookahead-4":  # 2 levels of window 4 plus 4 pool n-grams of 2 tokens, and the last token
            assert p["verify_width"] == (4 + settings["pool_size"]) * (settings["levels"] - 1) + 1
        if p["method"] == "early-exit-4":  # a self-draft also reads its share of the weights per drafted token
            assert p["drafting_cost"] > 0


def test_vocab_reduce_bench_times_each_reduction_per_row_count(capsys):
    vocab_reduce.main(["--vocab", "5000", "--rows", "1,3", "--repeats", "1", "--markdown"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| rows | jnp.argmax (ms) | vocab_reduce.argmax (ms)")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["1", "3"]


def test_step_profile_sums_a_decode_steps_ops_by_kind():
    # hidden 192: every layer product has at least MIN_WEIGHTS weights, so it runs through the kernels.
    model, params = random_model(0, 2, 192, 4, 4)
    r = step_profile.profile(model, params, vocab=40, prompt_len=8, new_tokens=6)
    assert len(r["products_us"]) == 2 * 7  # q, k, v, o, gate, up, down per layer; the small head is XLA's
    assert set(r["kinds_us"]) == {"kernel products", "XLA dots", "other ops"}
    assert r["kinds_us"]["kernel products"] == pytest.approx(sum(r["products_us"]))
    assert 0 < sum(r["kinds_us"].values()) <= r["loop_us_per_step"]
