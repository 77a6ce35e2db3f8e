"""generate(): compilation reuse, stop tokens per row, budgets and bad input."""

from __future__ import annotations

import pytest

from jaxspec import InputError, load
from jaxspec.decode_loop import TRACE_COUNTS
from jaxspec.generate import bucket, generate
from tests.hf_factory import make_hf_model


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = tmp_path_factory.mktemp("m")
    make_hf_model("mistral", path)
    return load(path)


def test_bucket():
    assert [bucket(n) for n in (1, 16, 17, 24, 25, 32, 33, 100, 518, 768, 769)] == [16, 16, 24, 24, 32, 32, 48, 128, 768, 768, 1024]


def test_new_prompt_of_known_bucket_does_not_recompile(lm):
    run = lambda prompts: generate(lm.model, lm.params, prompts, max_new_tokens=6)
    run([[4, 5, 6], [7]])
    before = TRACE_COUNTS["decode"]
    run([[9, 10, 11, 12, 13, 14, 15, 16, 17], [20, 21]])  # same batch, same bucket (16)
    run([[30] * 16, [31] * 3])
    assert TRACE_COUNTS["decode"] == before
    run([[9] * 17, [20]])  # bucket 24: one new program
    assert TRACE_COUNTS["decode"] == before + 1


def test_rows_stop_at_their_own_stop_token(lm):
    prompts = [[5, 6, 7, 8], [40, 41], [70]]
    free = generate(lm.model, lm.params, prompts, max_new_tokens=20)
    # Pick a stop token that rows reach at different steps.
    stop = free[0].output_ids[3]
    stopped = generate(lm.model, lm.params, prompts, max_new_tokens=20, stop_ids=[stop])
    lengths = set()
    for f, s in zip(free, stopped):
        expected = f.output_ids[: f.output_ids.index(stop) + 1] if stop in f.output_ids else f.output_ids
        assert s.output_ids == expected
        assert s.target_calls == len(s.output_ids) == sum(s.accept_lengths)
        assert s.accept_lengths == [1] * len(s.output_ids)
        lengths.add(len(s.output_ids))
    assert 4 in lengths and len(lengths) > 1


def _cut_at_sequence(output: list[int], seq: list[int]) -> list[int]:
    for end in range(len(seq), len(output) + 1):
        if output[end - len(seq) : end] == seq:
            return output[:end]
    return output


def test_rows_stop_after_a_stop_sequence_also_when_drafts_cross_it(lm):
    """A stop sequence ends a row where its new tokens first end with it (never reaching into the prompt),
    the same for plain decoding and for prompt lookup, whose accepted drafts can hold the whole sequence
    or straddle two steps."""
    from jaxspec.drafters.prompt_lookup import PromptLookup

    prompts = [[5, 6, 7, 8, 5, 6, 7, 8], [40, 41], [70]]
    free = generate(lm.model, lm.params, prompts, max_new_tokens=20)
    seq = free[0].output_ids[4:7]
    crossing = [prompts[0][-1], free[0].output_ids[0]]  # prompt end + first new token: not a match
    for drafter in (None, PromptLookup(num_draft_tokens=4)):
        extra = {} if drafter is None else {"drafter": drafter}
        stopped = generate(lm.model, lm.params, prompts, max_new_tokens=20, stop_sequences=[seq, crossing], **extra)
        for f, s in zip(free, stopped):
            assert s.output_ids == min(_cut_at_sequence(f.output_ids, seq), _cut_at_sequence(f.output_ids, crossing), key=len)
    assert len(stopped[0].output_ids) <= 7
    with pytest.raises(InputError, match="a stop sequence is empty"):
        generate(lm.model, lm.params, prompts, max_new_tokens=4, stop_sequences=[[]])


def test_max_new_tokens_is_exact_without_stop(lm):
    out = generate(lm.model, lm.params, [[3, 4], [5] * 10], max_new_tokens=9)
    assert [len(r.output_ids) for r in out] == [9, 9]


def test_batch_rows_are_independent_of_each_other(lm):
    """A ragged batch gives each row what it gets alone (greedy)."""
    prompts = [[5, 6, 7, 8, 9, 10, 11], [40], [70, 71, 72]]
    together = generate(lm.model, lm.params, prompts, max_new_tokens=12)
    for p, r in zip(prompts, together):
        assert generate(lm.model, lm.params, [p], max_new_tokens=12)[0].output_ids == r.output_ids


@pytest.mark.parametrize(
    "prompts, kwargs, message",
    [
        ([[1] * 250], dict(max_new_tokens=10, max_positions=256), "exceeds the model's 256 positions"),
        ([[]], dict(max_new_tokens=4), "prompt 0 is empty"),
        ([[1, 500]], dict(max_new_tokens=4), "token id 500 outside the vocabulary"),
        ([[1, 2]], dict(max_new_tokens=0), "max-new-tokens must be a positive integer"),
        ([], dict(max_new_tokens=4), "no prompts given"),
    ],
)
def test_bad_input(lm, prompts, kwargs, message):
    with pytest.raises(InputError, match=message):
        generate(lm.model, lm.params, prompts, **kwargs)
