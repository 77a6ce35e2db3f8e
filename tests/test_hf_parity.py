"""Parity with Hugging Face transformers (torch CPU) on tiny random models of every family.

jaxspec runs each ragged batch as one batch; transformers runs it row by row.
Where transformers' top-2 logit gap is under 1e-4 the greedy choice is a
coin toss between implementations, so the comparison stops there instead of
loosening the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jaxspec import load, score
from jaxspec.generate import generate
from tests.hf_factory import FAMILIES, VOCAB, make_hf_model
from tests.hf_oracle import assert_greedy_matches

LOGPROB_TOL = 1e-4
# Longer than every sliding window in the factory (4 or 5), so windows bite.
PROMPT_LENGTHS = (13, 4, 9, 1)
MAX_NEW = 24


def _prompts(seed: int) -> list[list[int]]:
    rs = np.random.RandomState(seed)
    return [rs.randint(3, VOCAB, size=n).tolist() for n in PROMPT_LENGTHS]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    hf = make_hf_model(request.param, path)
    return request.param, hf, load(path)


def test_logprobs_match(family_model):
    _, hf, lm = family_model
    prompts = _prompts(0)
    ours = score(lm.model, lm.params, prompts)
    for prompt, row in zip(prompts, ours):
        with torch.no_grad():
            logits = hf(torch.tensor([prompt])).logits[0].double()
        ref = torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(prompt[1:])[:, None])[:, 0].numpy()
        assert row["logprobs"][0] is None
        np.testing.assert_allclose(np.array(row["logprobs"][1:], float), ref, atol=LOGPROB_TOL, rtol=0)
        assert row["argmax"] == logits.argmax(-1).tolist()


def test_greedy_generation_matches(family_model):
    _, hf, lm = family_model
    prompts = _prompts(1)
    ours = generate(lm.model, lm.params, prompts, max_new_tokens=MAX_NEW, stop_ids=lm.eos_ids)
    assert_greedy_matches(hf, prompts, ours, MAX_NEW, lm.eos_ids)


def test_bfloat16_close_to_float32(family_model):
    """bfloat16 weights and compute stay close to float32 (a sanity bound, not parity)."""
    _, _, lm = family_model
    lm16 = load(lm.source, "bfloat16")
    prompts = _prompts(2)
    lp32 = [r["logprobs"][1:] for r in score(lm.model, lm.params, prompts)]
    lp16 = [r["logprobs"][1:] for r in score(lm16.model, lm16.params, prompts)]
    for a, b in zip(lp32, lp16):
        if a:
            assert np.max(np.abs(np.array(a) - np.array(b))) < 0.35
