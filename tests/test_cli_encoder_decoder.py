"""The CLI on an encoder-decoder model (T5Gemma): the same commands and flags as decoder-only; --prompt is
the encoder input and `score` scores a --target given its prompt."""

from __future__ import annotations

import json

import pytest

from jaxspec import load, score
from jaxspec.generate import generate
from jaxspec.cli import main
from tests.hf_factory import make_hf_model
from tests.hf_t5gemma_factory import make_t5gemma

SOURCES = ([5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 10], [20, 21, 22])


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    target, draft, decoder_only = (tmp_path_factory.mktemp(n) for n in ("t5gemma", "t5gemma_draft", "qwen2"))
    make_t5gemma(target)
    make_t5gemma(draft, seed=1, num_hidden_layers=1)
    make_hf_model("qwen2", decoder_only)
    return target, draft, decoder_only


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _ids(source) -> list[str]:
    return ["--prompt-ids", ",".join(map(str, source))]


@pytest.mark.parametrize("method", ["autoregressive", "draft-model", "prompt-lookup"])
def test_generate_decodes_the_decoder_side_with_every_method(capsys, dirs, method):
    target, _, _ = dirs
    # The target drafting for itself accepts every draft, so speculation visibly happens with a fixed K
    # (the default sizing rightly never drafts with a draft as costly as the target).
    flags = ["--method", method] + (["--draft", target, "--num-draft-tokens", "4"] if method == "draft-model" else [])
    code, out, err = _run(
        capsys, "generate", "--model", target, *_ids(SOURCES[0]), *_ids(SOURCES[1]), "--max-new-tokens", "8", "--json", *flags
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    lm = load(target)
    want = generate(lm.model, lm.params, list(SOURCES), max_new_tokens=8, stop_ids=lm.eos_ids)
    assert [r["prompt_ids"] for r in rows] == [list(s) for s in SOURCES]
    assert [r["output_ids"] for r in rows] == [w.output_ids for w in want]
    if method == "draft-model":
        assert max(max(r["accept_lengths"]) for r in rows) > 1


def test_score_takes_one_target_per_prompt(capsys, dirs):
    target, _, _ = dirs
    code, out, err = _run(
        capsys, "score", "--model", target, *_ids(SOURCES[0]), *_ids(SOURCES[1]),
        "--target-ids", "3,4,5", "--target-ids", "7", "--json",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    lm = load(target)
    want = score(lm.model, lm.params, list(SOURCES), [[3, 4, 5], [7]])
    assert rows == want
    assert [len(r["logprobs"]) for r in rows] == [3, 1] and all(lp < 0 for r in rows for lp in r["logprobs"])


def test_info_and_convert_round_trip(capsys, dirs, tmp_path):
    target, _, _ = dirs
    code, out, _ = _run(capsys, "convert", target, tmp_path / "js")
    assert code == 0
    code, out, _ = _run(capsys, "convert", tmp_path / "js", tmp_path / "back", "--to", "hf")
    infos = [json.loads(_run(capsys, "info", p, "--json")[1]) for p in (target, tmp_path / "js", tmp_path / "back")]
    assert [i["format"] for i in infos] == ["hf", "jaxspec", "hf"]
    assert {i["architecture"] for i in infos} == {"T5GemmaForConditionalGeneration"}
    assert len({i["parameters"] for i in infos}) == 1


def test_bench_runs_beside_transformers(capsys, dirs, tmp_path):
    target, draft, _ = dirs
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt_ids": list(s)}) + "\n" for s in SOURCES))
    code, out, err = _run(
        capsys, "bench", "--model", target, "--draft", draft, "--methods", "autoregressive,draft-model,prompt-lookup",
        "--prompts", prompts, "--max-new-tokens", "6", "--compare-hf",
    )
    assert code == 0, err
    methods = [line.split()[0] for line in out.splitlines()[1:]]
    assert methods == ["autoregressive", "draft-model", "prompt-lookup", "hf-generate", "hf-assisted", "hf-prompt-lookup"]


@pytest.mark.parametrize(
    "which, argv, message",
    [
        ("target", ["score", "--prompt-ids", "5,6"],
         "an encoder-decoder model scores one target per prompt: 1 prompts, 0 targets"),
        ("decoder_only", ["score", "--prompt-ids", "5,6", "--target-ids", "7"],
         "targets are for encoder-decoder models; a decoder-only model scores its prompts"),
        ("target", ["generate", "--prompt-ids", "5,6", "--method", "draft-model", "--draft", "DECODER_ONLY"],
         "the draft is a decoder-only model but the target is an encoder-decoder one: both must be of one kind"),
        ("target", ["generate", "--prompt-ids", "5,6", "--mesh", "data=2"],
         "mesh data=2 has 2 devices, but 1 are available"),
        ("target", ["generate", "--prompt-ids", "5,6", "--max-new-tokens", "300"],
         "input of 2 tokens or 300 new tokens exceeds the model's 256 positions"),
        ("target", ["score", "--prompt-ids", "5,6", "--target-ids", "7,x"],
         "--target-ids expects comma-separated integers, got '7,x'"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, dirs, which, argv, message):
    target, _, decoder_only = dirs
    model = target if which == "target" else decoder_only
    argv = [decoder_only if a == "DECODER_ONLY" else a for a in argv]
    code, _, err = _run(capsys, argv[0], "--model", model, *argv[1:])
    assert code == 2
    assert err.strip() == f"jaxspec: error: {message}"
