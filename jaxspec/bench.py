"""`jaxspec bench`: several decoding methods on the same prompts, in one run, optionally beside transformers.

Each distinct batch shape is run once untimed first so that compilation is not
counted; then every batch (every prompt, for transformers) is timed --repeats
times and the median counts. Each timed call records the share of the cores
other processes took meanwhile; with --max-other-load a call they disturbed is
redone once they have gone idle (jaxspec/machine_load.py).
Results: a table on stdout (tokens/s, speedup over autoregressive, mean tokens
per target call, others' worst CPU share) and, with --out, Spec-Bench-style
JSONL with `new_tokens`, `wall_time` (the median), `wall_times`,
`other_load` and `accept_lengths` per prompt.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

from jaxspec.cli import load_draft, resolve_prompts
from jaxspec.errors import InputError
from jaxspec.generate import bucket, generate
from jaxspec.loading import load, save
from jaxspec.machine_load import Timing, timed
from jaxspec.method_setup import MethodOptions, prepare_method
from jaxspec.methods import DEFAULT_DRAFT_TOKENS, METHODS
from jaxspec.sampling import SamplingConfig


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _repeat(fn, args) -> list[Timing]:
    """--repeats timed calls of fn, each under the --max-other-load check."""
    return [timed(fn, max_other_load=args.max_other_load, attempts=3) for _ in range(args.repeats)]


def _timing_fields(timings: list[Timing]) -> dict:
    seconds = [t.seconds for t in timings]
    return dict(wall_time=statistics.median(seconds), wall_times=seconds, other_load=max(t.other_load for t in timings))


def run_jaxspec(args, method, lm, draft, prompts, sampling: SamplingConfig = SamplingConfig()):
    """Each --batch-size batch of prompts decoded by `method`, timed; one record per prompt. Seeded: a
    sampled run draws the same tokens on every repeat."""
    records, warmed = [], set()
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start : start + args.batch_size]
        m = prepare_method(method, lm, len(batch), sampling, MethodOptions.from_args(args), draft=draft, prompts=batch,
                           progress=_progress)
        states = []  # the drafter's final state per call: what a drafter with describe() reports

        def keep(state, save=m.drafter_state_to):
            states.append(state)
            if save is not None:  # --successor-table: the table after each call, as `jaxspec generate` saves it
                save(state)

        run = lambda: generate(
            lm.model, lm.params, batch, max_new_tokens=args.max_new_tokens, sampling=sampling, seed=start,
            stop_ids=lm.eos_ids, drafter=m.drafter, drafter_params=m.drafter_params, sizing=m.sizing,
            drafter_state_to=keep,
        )
        shape = (len(batch), bucket(max(len(p) for p in batch)))
        if shape not in warmed:
            run()
            warmed.add(shape)
        timings = _repeat(run, args)
        described = {"drafter": m.drafter.describe(states[-1])} if hasattr(m.drafter, "describe") else {}
        # Greedy and seeded sampling give the same tokens every time, so any call's results stand for all.
        for i, r in enumerate(timings[0].value):
            records.append(
                {
                    "method": method,
                    "batch": start // args.batch_size,
                    "prompt_index": start + i,
                    "new_tokens": r.new_tokens,
                    **_timing_fields(timings),
                    "accept_lengths": r.accept_lengths,
                    "target_calls": r.target_calls,
                    **described,
                }
            )
        _progress(f"  {method}: {min(start + args.batch_size, len(prompts))}/{len(prompts)} prompts")
    return records


def _hf_dir(lm, tmp: Path, name: str) -> Path:
    """transformers needs a Hugging Face directory; convert a jaxspec checkpoint to one."""
    if lm.format == "hf":
        return lm.source
    save(lm, tmp / name, to="hf")
    return tmp / name


HF_METHODS = ("hf-generate", "hf-assisted", "hf-prompt-lookup")


def run_hf(args, lm, draft, prompts, tmp: Path, methods=HF_METHODS):
    """transformers' greedy generate, assisted generation (with a draft) and prompt lookup, one prompt at a time."""
    try:
        import torch
        import transformers
    except ImportError:
        raise InputError("--compare-hf needs transformers and torch (pip install 'jaxspec[bench]')") from None
    torch.set_grad_enabled(False)
    auto = transformers.AutoModelForSeq2SeqLM if lm.model.is_encoder_decoder else transformers.AutoModelForCausalLM
    target = auto.from_pretrained(_hf_dir(lm, tmp, "target"), dtype=torch.float32).eval()
    # Speculative settings equal to jaxspec's: the same draft length and n-gram size, a constant
    # number of assistant tokens and no confidence threshold (transformers' defaults are 20 tokens,
    # a heuristic schedule and a 0.4 threshold). transformers has no cost model: with jaxspec's "auto"
    # it runs jaxspec's fixed default lengths.
    fixed = args.num_draft_tokens if isinstance(args.num_draft_tokens, int) else None
    variants = {"hf-generate": {}}
    if draft is not None and "hf-assisted" in methods:
        assistant = auto.from_pretrained(_hf_dir(draft, tmp, "draft"), dtype=torch.float32).eval()
        k = fixed or DEFAULT_DRAFT_TOKENS["draft-model"]
        assistant.generation_config.num_assistant_tokens = k
        assistant.generation_config.num_assistant_tokens_schedule = "constant"
        assistant.generation_config.assistant_confidence_threshold = 0.0
        variants["hf-assisted"] = {"assistant_model": assistant}
    variants["hf-prompt-lookup"] = {
        "prompt_lookup_num_tokens": fixed or DEFAULT_DRAFT_TOKENS["prompt-lookup"],
        "max_matching_ngram_size": args.ngram,
    }
    variants = {name: extra for name, extra in variants.items() if name in methods}
    records = []
    for name, extra in variants.items():
        for i, p in enumerate(prompts):
            ids = torch.tensor([p])
            kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=False, eos_token_id=list(lm.eos_ids) or None,
                          pad_token_id=lm.eos_ids[0] if lm.eos_ids else 0, **extra)
            if i == 0:
                target.generate(ids, **kwargs)  # warm-up
            timings = _repeat(lambda: target.generate(ids, **kwargs), args)
            # A decoder-only model's output repeats the prompt; an encoder-decoder's starts with the start token.
            new = timings[0].value.shape[1] - (1 if lm.model.is_encoder_decoder else len(p))
            records.append({"method": name, "batch": i, "prompt_index": i, "new_tokens": new, **_timing_fields(timings)})
        _progress(f"  {name}: {len(prompts)} prompts")
    return records


def summarize(records) -> dict[str, dict]:
    """method → tokens_per_s, tokens_per_call (None for transformers) and other_load (the worst timed call's).

    Rows of one batch share its (median) wall time."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in records):
        rows = [r for r in records if r["method"] == method]
        wall = sum({r["batch"]: r["wall_time"] for r in rows}.values())
        tokens = sum(r["new_tokens"] for r in rows)
        calls = sum(r.get("target_calls", 0) for r in rows)
        out[method] = dict(
            tokens_per_s=tokens / wall, tokens_per_call=tokens / calls if calls else None,
            other_load=max(r["other_load"] for r in rows),
        )
    return out


def run_bench(args) -> None:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"unknown method {unknown[0] if unknown else ''!r} (choose from {', '.join(METHODS)})")
    if args.batch_size < 1:
        raise InputError(f"batch-size must be >= 1, got {args.batch_size}")
    if args.repeats < 1:
        raise InputError(f"repeats must be >= 1, got {args.repeats}")
    if args.max_other_load is not None and not 0 <= args.max_other_load <= 1:
        raise InputError(f"max-other-load is a share of the cores, in [0, 1], got {args.max_other_load}")
    lm = load(args.model, args.dtype)
    prompts = resolve_prompts([("--prompts", args.prompts)], lm.tokenizer)
    draft = load_draft(args, args.dtype)
    records = []
    for method in methods:
        _progress(f"jaxspec {method} (batch {args.batch_size})")
        records += run_jaxspec(args, method, lm, draft, prompts)
    if args.compare_hf:
        with tempfile.TemporaryDirectory() as tmp:
            records += run_hf(args, lm, draft, prompts, Path(tmp))
    summary = summarize(records)
    base = summary["autoregressive"]["tokens_per_s"] if "autoregressive" in summary else None
    print(f"{'method':<20} {'tokens/s':>10} {'speedup':>8} {'tokens/call':>12} {'others':>7}")
    for method, s in summary.items():
        speedup = f"{s['tokens_per_s'] / base:.2f}x" if base else "-"
        calls = f"{s['tokens_per_call']:.2f}" if s["tokens_per_call"] else "-"
        print(f"{method:<20} {s['tokens_per_s']:>10.1f} {speedup:>8} {calls:>12} {s['other_load']:>7.0%}")
    if args.out:
        with open(args.out, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
