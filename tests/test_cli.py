"""The jaxspec CLI: output forms, both checkpoint forms, and one line + exit 2 for every user error."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from jaxspec.cli import main
from jaxspec.cost_model import DEFAULT_CONTEXT, DEFAULT_WIDTHS, curve_key, curve_path
from jaxspec.loading import load
from tests.hf_factory import make_hf_model

JSON_FIELDS = {"prompt_ids", "output_ids", "text", "new_tokens", "wall_time", "target_calls", "accept_lengths"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("m")
    make_hf_model("qwen2", path)
    return path


@pytest.fixture(scope="module")
def draft_dirs(tmp_path_factory):
    """A draft that fits the qwen2 target, and one whose vocabulary does not."""
    good, bad = tmp_path_factory.mktemp("draft"), tmp_path_factory.mktemp("bad_draft")
    make_hf_model("llama", good, num_hidden_layers=1, seed=3)
    make_hf_model("llama", bad, num_hidden_layers=1, vocab_size=120)
    return good, bad


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_json_mixes_prompt_forms_in_order(capsys, model_dir, tmp_path):
    file = tmp_path / "p.jsonl"
    file.write_text('{"prompt": "import os"}\n\n{"prompt_ids": [9, 10]}\n')
    code, out, _ = _run(
        capsys, "generate", "--model", model_dir, "--prompt", "def add", "--prompts", file,
        "--prompt-ids", "5,6,7", "--max-new-tokens", "5", "--json",
    )
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4
    assert all(set(r) == JSON_FIELDS for r in rows)
    assert rows[2]["prompt_ids"] == [9, 10] and rows[3]["prompt_ids"] == [5, 6, 7]
    for r in rows:
        assert r["new_tokens"] == len(r["output_ids"]) <= 5
        assert r["accept_lengths"] == [1] * r["target_calls"]
        assert isinstance(r["text"], str)


def test_generate_text_output(capsys, model_dir):
    code, out, err = _run(capsys, "generate", "--model", model_dir, "--prompt", "for i in", "--max-new-tokens", "4")
    assert code == 0 and out.startswith("for i in") and "tokens" in err


def test_sampling_flags_are_used(capsys, model_dir):
    args = ["generate", "--model", model_dir, "--prompt-ids", "5,6", "--max-new-tokens", "16", "--json"]
    sample = lambda seed: json.loads(_run(capsys, *args, "--temperature", "1.5", "--top-k", "50", "--seed", seed)[1])
    assert sample(1)["output_ids"] == sample(1)["output_ids"]
    assert sample(1)["output_ids"] != sample(2)["output_ids"]


@pytest.mark.parametrize("method", ["draft-model", "prompt-lookup", "lookahead", "dynamic-exit"])
def test_speculative_methods_give_the_greedy_output(capsys, model_dir, draft_dirs, tmp_path, method):
    ref = tmp_path / "ref.txt"
    ref.write_text("def add(a, b):\n    return a + b\n")
    common = ["generate", "--model", model_dir, "--prompt", "def add(a, b):", "--max-new-tokens", "12", "--json"]
    plain = json.loads(_run(capsys, *common)[1])
    extra = {
        "draft-model": ["--draft", draft_dirs[0], "--adaptive-draft"],
        "prompt-lookup": ["--reference", ref, "--ngram", "2"],
        "lookahead": [],  # --window auto: the default tree, or plain decoding where it cannot pay
        "dynamic-exit": ["--exit-layers", "1,2"],
    }[method]
    code, out, _ = _run(capsys, *common, "--method", method, "--num-draft-tokens", "3", *extra)
    fast = json.loads(out)
    assert code == 0 and fast["output_ids"] == plain["output_ids"]
    assert sum(fast["accept_lengths"]) == fast["new_tokens"] and len(fast["accept_lengths"]) == fast["target_calls"]


def test_layer_skip_searches_on_the_prompt_saves_the_set_and_reuses_it(capsys, model_dir, tmp_path):
    common = ["generate", "--model", model_dir, "--prompt", "def add(a, b): return a + b", "--max-new-tokens", "10",
              "--json"]
    plain = json.loads(_run(capsys, *common)[1])
    saved = tmp_path / "skip.json"
    code, out, err = _run(capsys, *common, "--method", "layer-skip", "--num-draft-tokens", "3",
                          "--search-budget", "6", "--save-skip-layers", saved)
    assert code == 0 and json.loads(out)["output_ids"] == plain["output_ids"]
    assert "skip-layer search" in err and json.loads(saved.read_text())["evaluations"] <= 6
    code, out, err = _run(capsys, *common, "--method", "layer-skip", "--num-draft-tokens", "3", "--skip-layers", saved)
    assert code == 0 and json.loads(out)["output_ids"] == plain["output_ids"] and "search" not in err
    code, out, _ = _run(capsys, *common, "--method", "layer-skip", "--num-draft-tokens", "2", "--skip-layers", "a1,m1")
    assert code == 0 and json.loads(out)["output_ids"] == plain["output_ids"]


def test_bench_prints_a_table_and_writes_spec_bench_jsonl(capsys, model_dir, draft_dirs, tmp_path):
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    prompts.write_text('{"prompt": "import os"}\n{"prompt_ids": [5, 6, 7, 5, 6]}\n{"prompt": "for i in"}\n')
    code, table, _ = _run(
        capsys, "bench", "--model", model_dir, "--draft", draft_dirs[0], "--prompts", prompts,
        "--methods", "autoregressive,draft-model,prompt-lookup,layer-skip,early-exit", "--batch-size", "3",
        "--max-new-tokens", "8", "--out", out, "--repeats", "3", "--max-other-load", "1",
        "--num-draft-tokens", "3",  # no cost curves
        "--skip-layers", "m1",  # no search
        "--exit-layer", "1",  # plain early exit
    )
    assert code == 0
    lines = table.strip().splitlines()
    assert lines[0].split() == ["method", "tokens/s", "speedup", "tokens/call", "others"]
    assert [line.split()[0] for line in lines[1:]] == [
        "autoregressive", "draft-model", "prompt-lookup", "layer-skip", "early-exit"
    ]
    assert lines[1].split()[2] == "1.00x"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 15 and all({"new_tokens", "wall_time", "accept_lengths", "other_load"} <= set(r) for r in rows)
    # Three timed calls per batch; the median is the one that counts.
    assert all(len(r["wall_times"]) == 3 and r["wall_time"] == sorted(r["wall_times"])[1] for r in rows)


def test_profile_measures_once_then_reads_the_cached_curve(capsys, model_dir):
    argv = ["profile", "--model", model_dir, "--widths", "1,2,5", "--batch-size", "2", "--json"]
    code, out, err = _run(capsys, *argv)
    first = json.loads(out)
    assert code == 0 and "measuring the forward cost" in err
    assert [r["width"] for r in first["curve"]] == [1, 2, 5] and first["curve"][0]["cost"] == 1.0
    assert first["key"]["batch_size"] == 2 and first["key"]["backend"] == "cpu"
    code, out, err = _run(capsys, *argv)
    assert code == 0 and json.loads(out) == first and "measuring" not in err
    code, out, err = _run(capsys, *argv, "--fresh")
    assert code == 0 and "measuring" in err


def test_auto_draft_length_is_the_default_and_sized_from_the_cost(capsys, model_dir):
    common = ["generate", "--model", model_dir, "--prompt-ids", "5,6,7,5,6,7,5,6", "--max-new-tokens", "12", "--json"]
    code, out, _ = _run(capsys, *common)
    plain = json.loads(out)
    code, out, _ = _run(capsys, *common, "--method", "prompt-lookup")
    auto = json.loads(out)
    assert code == 0 and auto["output_ids"] == plain["output_ids"]
    assert max(auto["accept_lengths"]) <= 17  # at most 16 drafts and the bonus token
    # The sizing came from this model's measured curve at batch 1, now on disk for the next call.
    lm = load(model_dir)
    assert curve_path(curve_key(lm.model, lm.params, batch_size=1, widths=DEFAULT_WIDTHS, context=DEFAULT_CONTEXT)).exists()


def test_score_json(capsys, model_dir):
    code, out, _ = _run(capsys, "score", "--model", model_dir, "--prompt-ids", "5,6,7", "--prompt", "import", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 2
    assert rows[0]["logprobs"][0] is None and len(rows[0]["logprobs"]) == 3 and len(rows[0]["argmax"]) == 3
    assert all(lp < 0 for lp in rows[0]["logprobs"][1:])


def test_convert_and_info_on_both_forms(capsys, model_dir, tmp_path):
    js, back = tmp_path / "js", tmp_path / "back"
    assert _run(capsys, "convert", model_dir, js)[0] == 0
    assert _run(capsys, "convert", js, back, "--to", "hf")[0] == 0
    infos = [json.loads(_run(capsys, "info", p, "--json")[1]) for p in (model_dir, js, back)]
    assert [i["format"] for i in infos] == ["hf", "jaxspec", "hf"]
    assert len({i["parameters"] for i in infos}) == 1
    gens = [
        _run(capsys, "generate", "--model", p, "--prompt-ids", "3,4", "--max-new-tokens", "6", "--json")[1]
        for p in (model_dir, js, back)
    ]
    assert len({json.loads(g)["output_ids"].__repr__() for g in gens}) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--model", "/nonexistent", "--prompt", "x"], "no such directory"),
        (["generate", "--model", "{m}", "--prompt", "x", "--top-p", "0"], "top-p must be in (0, 1]"),
        (["generate", "--model", "{m}", "--prompt", "x", "--temperature", "-1"], "temperature must be >= 0"),
        (["generate", "--model", "{m}", "--prompt-ids", "1,a"], "comma-separated integers"),
        (["generate", "--model", "{m}", "--prompts", "/nonexistent.jsonl"], "cannot read prompts file"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--max-new-tokens", "1000"], "exceeds the model's"),
        (["generate", "--model", "{m}"], "give at least one"),
        (["generate", "--model", "{m}", "--prompt", "x", "--dtype", "int8"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
        (["convert", "{m}", "{m}"], "would overwrite the source"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "beam"], "invalid choice: 'beam'"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "draft-model"], "needs a draft model"),
        (
            ["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "draft-model", "--draft", "{bad}"],
            "draft vocabulary (120) differs from the target's (96)",
        ),
        (
            ["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "prompt-lookup", "--num-draft-tokens", "0"],
            "num-draft-tokens must be >= 1",
        ),
        (
            ["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "prompt-lookup", "--max-new-tokens", "300"],
            "exceeds the model's 256 positions",
        ),
        (["bench", "--model", "{m}", "--prompts", "{m}/config.json", "--methods", "x"], "unknown method 'x'"),
        (["bench", "--model", "{m}", "--prompts", "{m}/config.json", "--repeats", "0"], "repeats must be >= 1, got 0"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--num-draft-tokens", "many"],
         "expected an integer or auto, got 'many'"),
        (["profile", "--model", "{m}", "--widths", "2,3"], "--widths must be positive and include 1"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "token-recycling", "--tree-size", "0"],
         "tree size must be >= 1, got 0"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "medusa"], "needs draft heads"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "prompt-lookup", "--lookup-branches", "0"],
         "lookup branches must be >= 1, got 0"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "jacobi", "--window", "0"],
         "window must be >= 1, got 0"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "lookahead", "--window", "3", "--levels", "5"],
         "lookahead: levels (5) must not exceed the window (3)"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "lookahead", "--pool-size", "0"],
         "lookahead: pool-size must be an integer >= 1, got 0"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--method", "lookahead", "--window", "200", "--levels", "2",
          "--pool-size", "100"], "the drafter verifies 300 tokens a step (a tree's nodes), more than the model's 256"),
        (["generate", "--model", "{m}", "--prompt-ids", "5,6", "--method", "layer-skip", "--skip-layers", "a1,m9"],
         "the skip set names layers [9], but the model has layers 0..2"),
        (["generate", "--model", "{m}", "--prompt-ids", "5,6", "--method", "layer-skip", "--skip-layers", "exit:3"],
         "exit layer must be in [1, 3) for a 3-layer model, got 3"),
        (["generate", "--model", "{m}", "--prompt-ids", "5,6", "--method", "layer-skip", "--skip-layers", "/no/s.json"],
         "/no/s.json: cannot read skip set"),
        (["generate", "--model", "{m}", "--prompt-ids", "5,6", "--method", "layer-skip", "--search-budget", "0"],
         "search budget must be >= 1, got 0"),
        (["generate", "--model", "{m}", "--prompt-ids", "5,6", "--method", "dynamic-exit", "--exit-layers", "1,3"],
         "exit layer must be in [1, 3) for a 3-layer model, got 3"),
        (["generate", "--model", "{m}", "--prompt-ids", "5,6", "--method", "dynamic-exit", "--exit-layers", "x"],
         "--exit-layers expects comma-separated layer counts or auto, got 'x'"),
        (["bench", "--model", "{m}", "--prompts", "{m}/config.json", "--max-other-load", "2"],
         "max-other-load is a share of the cores, in [0, 1], got 2.0"),
        (["generate", "--model", "{m}", "--prompt-ids", "5", "--stop", "x"], "stop texts need a byte-level model (HAT)"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, model_dir, draft_dirs, argv, message):
    argv = [a.replace("{m}", str(model_dir)).replace("{bad}", str(draft_dirs[1])) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_console_script_unknown_architecture_has_no_traceback(model_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (bad / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "jaxspec", "info", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    from models import supported_architectures

    assert proc.stderr.strip() == (
        f"jaxspec: error: {bad}: unknown architecture 'MambaForCausalLM' "
        f"(supported: {', '.join(supported_architectures())})"
    )
    assert "LlamaForCausalLM" in proc.stderr


def test_main_leaves_the_sigpipe_handler_alone(capsys, model_dir):
    """main() runs in-process (tests, notebooks, user code): with SIGPIPE at its default there, a later write
    to a closed pipe or socket would kill the caller's process without a word."""
    before = signal.getsignal(signal.SIGPIPE)
    assert _run(capsys, "info", model_dir)[0] == 0
    assert signal.getsignal(signal.SIGPIPE) == before


def test_console_script_ends_quietly_when_the_reader_goes_away(model_dir):
    """`jaxspec info M | head`: the reader is gone before the output is written; no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxspec", "info", str(model_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGPIPE and err == b""
