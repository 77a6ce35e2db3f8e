"""The real model: Gemma 3 270M from its GGUF package, against transformers loading the same file.

transformers dequantizes the .gguf itself (`gguf_file=`), so this checks
jaxspec's whole import (metadata → config, dequantization, llama.cpp's
conventions undone, the tokenizer) and its forward on real weights and real
text, past the 512-token sliding window.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from jaxspec import load, reference_model, score
from jaxspec.generate import generate
from tests.hf_oracle import assert_greedy_matches

LOGPROB_TOL = 2e-4
SCORED_TOKENS = 640  # past the 512-token sliding window of the local layers
GREEDY_TOKENS = 64  # the 450-token row crosses the 512-token window


def _stdlib_text(name: str) -> str:
    return (Path(sysconfig.get_paths()["stdlib"]) / name).read_text()


@pytest.fixture(scope="module")
def lm(reference_dir):
    return load(reference_dir)


@pytest.fixture(scope="module")
def hf(reference_gguf):
    path = reference_gguf
    torch.set_grad_enabled(False)
    return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def test_converted_directory_is_a_plain_hf_checkpoint(reference_dir, lm):
    config = json.loads((reference_dir / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (18, 640, 262144)
    assert lm.format == "hf" and lm.tokenizer is not None and lm.eos_ids == (1,)
    assert 268e6 < lm.num_params < 269e6


def test_converted_directory_is_reused(reference_dir, monkeypatch):
    monkeypatch.setattr("jaxspec.loading.load", lambda *a, **k: pytest.fail("converted again"))
    assert reference_model.converted_dir() == reference_dir


def test_logprobs_match_transformers_past_the_sliding_window(lm, hf):
    ids = lm.tokenizer.encode(_stdlib_text("json/__init__.py"))[:SCORED_TOKENS]
    assert len(ids) == SCORED_TOKENS
    [row] = score(lm.model, lm.params, [ids])
    logits = hf(torch.tensor([ids])).logits[0].double()
    ref = torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()
    diff = np.abs(np.array(row["logprobs"][1:], float) - ref)
    print(f"logprob difference over {len(diff)} tokens: median {np.median(diff):.1e}, max {diff.max():.1e}")
    assert diff.max() < LOGPROB_TOL
    assert diff[512:].max() < LOGPROB_TOL  # the local layers' window is full here


def test_greedy_matches_transformers_on_a_ragged_batch(lm, hf):
    sources = ["json/__init__.py", "textwrap.py", "argparse.py", "csv.py", "fractions.py", "heapq.py", "shlex.py", "string.py"]
    # Ragged; the first row decodes across the 512-token window of the local layers.
    lengths = [450, 7, 120, 45, 220, 16, 80, 160]
    prompts = [lm.tokenizer.encode(_stdlib_text(s))[:n] for s, n in zip(sources, lengths)]
    results = generate(lm.model, lm.params, prompts, max_new_tokens=GREEDY_TOKENS, stop_ids=lm.eos_ids)
    compared, near_ties = assert_greedy_matches(hf, prompts, results, GREEDY_TOKENS, lm.eos_ids)
    print(f"greedy: {compared} tokens compared, {near_ties} of {len(prompts)} rows cut at a near-tie")
