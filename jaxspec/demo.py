"""`jaxspec demo`: the shipped target/draft pair completes a code prompt, plainly and speculatively.

Both programs are compiled before timing, so the tokens/s shown are decode
speed. Under greedy decoding the two completions must be identical; the demo
says so, or fails loudly if they are not.
"""

from __future__ import annotations

import sys

from jaxspec.drafters.draft_model import DraftModel
from jaxspec.errors import JaxspecError
from jaxspec.generate import generate
from jaxspec.loading import load
from jaxspec.sampling import SamplingConfig

DEFAULT_PROMPT = '''import os


def list_python_files(root):
    """Return the paths of all Python files below root."""
'''


def run_demo(target_path: str, draft_path: str, prompt: str, max_new_tokens: int, num_draft_tokens: int) -> None:
    say = lambda msg: print(msg, file=sys.stderr, flush=True)
    say(f"loading target {target_path} and draft {draft_path}")
    target, draft = load(target_path), load(draft_path)
    if target.tokenizer is None:
        raise JaxspecError(f"{target_path}: the demo needs a tokenizer.json")
    ids = target.tokenizer.encode(prompt)
    greedy = SamplingConfig()
    runs = {
        "autoregressive": {},
        "speculative": dict(
            drafter=DraftModel(draft.model, num_draft_tokens, greedy), drafter_params=draft.params
        ),
    }
    results = {}
    for name, extra in runs.items():
        say(f"compiling {name} decoding ...")
        call = lambda: generate(
            target.model, target.params, [ids], max_new_tokens=max_new_tokens, stop_ids=target.eos_ids, **extra
        )[0]
        call()
        say(f"running {name} decoding ...")
        results[name] = call()

    print(f"Prompt ({len(ids)} tokens):\n{prompt}")
    for name, r in results.items():
        print(f"--- {name} completion ---")
        print(target.tokenizer.decode(r.output_ids))
    plain, spec = results["autoregressive"], results["speculative"]
    same = plain.output_ids == spec.output_ids
    print("--- summary ---")
    for name, r in results.items():
        per_call = r.new_tokens / r.target_calls
        print(
            f"{name:>15}: {r.new_tokens} tokens in {r.wall_time:.3f} s = {r.new_tokens / r.wall_time:7.1f} tokens/s, "
            f"{r.target_calls} target calls ({per_call:.2f} tokens per call)"
        )
    speedup = (spec.new_tokens / spec.wall_time) / (plain.new_tokens / plain.wall_time)
    print(f"speedup: {speedup:.2f}x; outputs identical: {same}")
    if not same:
        raise SystemExit("speculative output differs from autoregressive output under greedy decoding")
