"""`jaxspec demo`: a real model writes real text, plainly and speculatively, and the two are compared.

By default the model is Gemma 3 270M from its PyPI package (converted once into
the cache, with progress shown), and the speculative method is prompt lookup,
the best jaxspec has for a model without a draft; with `--draft` it is the
draft model. Each prompt (code, prose, a document to quote from) runs at batch
1; both programs are compiled before timing, so tokens/s are decode speed.
Under greedy decoding the two completions must be identical: the demo says
so, or fails loudly if they are not.
"""

from __future__ import annotations

import dataclasses
import sys

from jaxspec.errors import JaxspecError
from jaxspec.generate import Generation, generate
from jaxspec.loading import LoadedModel, load
from jaxspec.methods import AUTO, auto_sizing, build_drafter, drafts_to_build
from jaxspec.sampling import SamplingConfig

_LICENSE = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software and "
    "associated documentation files (the \"Software\"), to deal in the Software without restriction, including "
    "without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell "
    "copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the "
    "following conditions:\n\nThe above copyright notice and this permission notice shall be included in all "
    "copies or substantial portions of the Software."
)

# (label, prompt): what a newcomer would try first. The code and prose prompts are 17-32 tokens long, so
# they share one prompt bucket and one compiled program per method.
PROMPTS = (
    ("code", 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'),
    ("prose", "In 1450 a goldsmith in Mainz began to print books with movable metal type. The history of the "
              "printing press begins in"),
    ("quote", f"{_LICENSE}\n\nQuote the first sentence of the license above exactly:\n\"Permission is hereby granted,"),
)


@dataclasses.dataclass(frozen=True)
class DemoRun:
    label: str
    prompt: str
    plain: Generation
    speculative: Generation


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _target(model: str | None) -> LoadedModel:
    if model is not None:
        return load(model)
    from jaxspec import reference_model

    path = reference_model.converted_dir(progress=_say)
    _say(f"loading {path}")
    return load(path)


def run_demo(
    model: str | None, draft: str | None, prompts, max_new_tokens: int, num_draft_tokens: int | str = AUTO
) -> list[DemoRun]:
    """Runs each (label, prompt) plainly and speculatively and prints both; `model` None is the reference model."""
    target = _target(model)
    if target.tokenizer is None:
        raise JaxspecError(f"{target.source}: the demo needs a model with a tokenizer")
    method_name = "draft-model" if draft is not None else "prompt-lookup"
    d = load(draft) if draft is not None else None
    drafter, drafter_params = build_drafter(
        method_name, batch=1, sampling=SamplingConfig(), target_vocab=target.model.vocab_size,
        target_encoder_decoder=target.model.is_encoder_decoder,
        num_draft_tokens=drafts_to_build(method_name, num_draft_tokens),
        draft_model=d.model if d else None, draft_params=d.params if d else None,
    )
    sizing = auto_sizing(
        method_name, num_draft_tokens, drafter, target.model, target.params, 1,
        draft_model=d.model if d else None, draft_params=d.params if d else None, progress=_say,
    )
    method = method_name.replace("-", " ")
    spec = dict(drafter=drafter, drafter_params=drafter_params, sizing=sizing)
    runs = []
    for label, prompt in prompts:
        ids = target.tokenizer.encode(prompt)
        results = {}
        for name, extra in (("plain", {}), (method, spec)):
            call = lambda: generate(
                target.model, target.params, [ids], max_new_tokens=max_new_tokens, stop_ids=target.eos_ids, **extra
            )[0]
            _say(f"[{label}] {name}: compiling, then timing ...")
            call()
            results[name] = call()
        runs.append(DemoRun(label, prompt, results["plain"], results[method]))
        _report(target, runs[-1], method)
    return runs


def _tps(g: Generation) -> float:
    return g.new_tokens / g.wall_time


def _report(target: LoadedModel, run: DemoRun, method: str) -> None:
    plain, spec = run.plain, run.speculative
    print(f"=== {run.label} ===")
    print(f"{run.prompt}\033[1m{target.tokenizer.decode(plain.output_ids)}\033[0m" if sys.stdout.isatty()
          else f"{run.prompt}{target.tokenizer.decode(plain.output_ids)}")
    same = plain.output_ids == spec.output_ids
    print(
        f"--- plain: {_tps(plain):.1f} tokens/s | {method}: {_tps(spec):.1f} tokens/s, "
        f"{spec.new_tokens / spec.target_calls:.2f} tokens per target call | speedup {_tps(spec) / _tps(plain):.2f}x | "
        f"greedy outputs identical: {same}"
    )
    if not same:
        raise SystemExit(f"[{run.label}] speculative output differs from plain output under greedy decoding")
