"""Per-row seeds: a row's sampled output depends on its prompt, its seed, the settings and the method only.

Guarantees pinned here (jaxspec/row_rng.py):
- every method, with fixed settings, is batch-invariant: row i of a batch decoded with seed s equals that
  prompt decoded alone with seed s + i, whatever the other rows, the batch size, the prompt bucket or the
  row's place in the batch;
- point-mass methods (prompt lookup) reproduce plain sampling's draws exactly: they accept a draft only
  when it equals the very token plain sampling draws at that position from the same key;
- the ratio rule (draft model) is batch-invariant but draws differently from plain sampling (its tokens
  come from the draft's own draws).
"""

from __future__ import annotations

import json

import pytest

from jaxspec import SamplingConfig
from jaxspec.generate import generate
from jaxspec.cli import main
from jaxspec.drafters.draft_model import DraftModel
from jaxspec.drafters.prompt_lookup import PromptLookup
from jaxspec.errors import InputError
from tests.random_models import noisy_copy, random_model, random_t5gemma

CFG = SamplingConfig(temperature=1.0, top_p=0.95)
PROMPTS = [[3, 4, 5, 3, 4, 5, 3], [9, 8], [10, 11, 12, 13, 10, 11, 12, 13, 10, 11], [7]]
LONG = list(range(3, 40))  # a row that moves the batch to a larger prompt bucket
NEW = 12


def _models():
    decoder, dparams = random_model(0, 2, 32, 4, 2, window=4, scale=3.0)
    t5g, t5params = random_t5gemma(0, 2, scale=3.0)
    return {"decoder-only": (decoder, dparams), "encoder-decoder": (t5g, t5params)}


MODELS = _models()


def _drafter(method, model, params):
    if method == "draft-model":
        return DraftModel(model, 3, CFG), noisy_copy(params, 1)
    if method == "prompt-lookup":
        return PromptLookup(3, 2), None
    return None, None


def _run(model, params, prompts, seed, method):
    drafter, dparams = _drafter(method, model, params)
    extra = dict(drafter=drafter, drafter_params=dparams) if drafter is not None else {}
    return [r.output_ids for r in generate(model, params, prompts, max_new_tokens=NEW, sampling=CFG, seed=seed, **extra)]


@pytest.mark.parametrize("method", ["autoregressive", "draft-model", "prompt-lookup"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_row_equals_its_prompt_decoded_alone(kind, method):
    model, params = MODELS[kind]
    batch = _run(model, params, PROMPTS, 100, method)
    alone = [_run(model, params, [p], 100 + i, method)[0] for i, p in enumerate(PROMPTS)]
    assert batch == alone
    # Another place in the batch, other neighbours, a larger prompt bucket: each row keeps its seed.
    order = [2, 0, 3, 1]
    shuffled = _run(model, params, [LONG] + [PROMPTS[i] for i in order], [5] + [100 + i for i in order], method)
    assert shuffled[1:] == [batch[i] for i in order]
    assert len({tuple(o) for o in batch}) == len(batch)  # really sampled, not degenerate


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_prompt_lookup_reproduces_plain_sampling_draw_for_draw(kind):
    model, params = MODELS[kind]
    plain = _run(model, params, PROMPTS, 7, "autoregressive")
    lookup = _run(model, params, PROMPTS, 7, "prompt-lookup")
    assert lookup == plain


def test_seeds_are_checked():
    model, params = MODELS["decoder-only"]
    for bad in (-1, 2**32, [1, 2]):
        with pytest.raises(InputError, match="seed"):
            generate(model, params, PROMPTS, max_new_tokens=2, sampling=CFG, seed=bad)


def test_cli_rows_take_seed_plus_index_or_their_own(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(row) for row in (
        {"prompt_ids": [3, 4, 5]}, {"prompt_ids": [9, 8], "seed": 77}, {"prompt_ids": [10, 11]},
    )))
    common = ["generate", "--model", "demo/target", "--max-new-tokens", "8", "--temperature", "0.9", "--json"]

    def rows(*argv):
        capsys.readouterr()
        assert main([*common, *argv]) == 0
        return [json.loads(line)["output_ids"] for line in capsys.readouterr().out.splitlines()]

    batch = rows("--prompts", str(prompts), "--seed", "40")
    assert batch[0] == rows("--prompt-ids", "3,4,5", "--seed", "40")[0]
    assert batch[1] == rows("--prompt-ids", "9,8", "--seed", "77")[0]
    assert batch[2] == rows("--prompt-ids", "10,11", "--seed", "42")[0]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--seed", "4294967296"], "seed must be an integer in [0, 2^32 - 1]"),
        (["--seed", "-3"], "seed must be an integer in [0, 2^32 - 1]"),
        (["--top-p", "0.9"], "give a temperature > 0"),
    ],
)
def test_bad_sampling_values_are_one_line(argv, needle, capsys):
    assert main(["generate", "--model", "demo/target", "--prompt-ids", "3,4", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err


def test_a_prompts_line_with_both_kinds_is_one_line(tmp_path, capsys):
    """A line may give text or ids, not both (a file may mix lines of either kind, as the flags may)."""
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"prompt": "def f():"}\n{"prompt": "x", "prompt_ids": [3, 4]}\n')
    assert main(["generate", "--model", "demo/target", "--prompts", str(mixed)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and 'mixed.jsonl:2: give "prompt" or "prompt_ids", not both' in err, err
