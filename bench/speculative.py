"""Speculative decoding on the demo pair, beside transformers, in one run.

    python -m bench.speculative --markdown

For each prompt set (bench/prompts/code.jsonl: function starts; quote.jsonl:
prompts whose continuation quotes their context) and each batch size, every
jaxspec method runs on the same prompts, greedy, float32: tokens/s, speedup
over jaxspec's own autoregressive decoding, and mean tokens per target call.
At batch 1, transformers' greedy generate, assisted generation (the same
draft) and prompt lookup run on the same weights too (transformers' assisted
generation does not batch), with jaxspec's draft length and n-gram size.
Compilation is excluded (each shape runs once untimed first); every batch is
timed --repeats times and the median counts; a call that other processes
disturbed is redone once they are idle (`jaxspec bench` does the timing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench import summaries
from jaxspec.bench import HF_METHODS, run_hf, run_jaxspec, summarize
from jaxspec.cli import method_defaults, resolve_prompts
from jaxspec.loading import load
from jaxspec.methods import AUTO

PROMPTS = Path(__file__).parent / "prompts"
# A label's suffix picks the drafts' length: none, the fixed K below; "-auto", sized per step from the
# measured forward cost (jaxspec/draft_sizing.py); "-adaptive", the draft model's confidence stop.
METHODS = {
    "code": ("autoregressive", "draft-model", "draft-model-adaptive", "draft-model-auto", "prompt-lookup", "prompt-lookup-auto"),
    "quote": ("autoregressive", "draft-model", "draft-model-auto", "prompt-lookup", "prompt-lookup-auto"),
}


def method_options(args, label: str, batch: int) -> tuple[str, argparse.Namespace]:
    """The jaxspec method a bench label runs, and its flags."""
    method = label.removesuffix("-adaptive").removesuffix("-auto")
    k = {"prompt-lookup": "lookup_tokens", "draft-model": "draft_tokens"}.get(method)
    k = getattr(args, k) if k else None
    return method, options(args, batch, AUTO if label.endswith("-auto") else k, label.endswith("-adaptive"))


def options(args, batch: int, k: int | str | None, adaptive: bool) -> argparse.Namespace:
    """The flags `jaxspec bench` would parse, for its runners, from this script's own."""
    return argparse.Namespace(**method_defaults() | dict(
        batch_size=batch, max_new_tokens=args.max_new_tokens, num_draft_tokens=k, adaptive_draft=adaptive,
        dtype="float32", repeats=args.repeats, max_other_load=args.max_other_load,
    ))


def table_rows(prompts: str, batch: int, records: list[dict]) -> list[dict]:
    """One row per method: tokens/s, speedup over jaxspec autoregressive, tokens per call, others' share."""
    summary = summarize(records)
    base = summary["autoregressive"]["tokens_per_s"]
    return [
        dict(prompts=prompts, batch=batch, method=method, speedup=s["tokens_per_s"] / base, **s)
        for method, s in summary.items()
    ]


def run(args) -> list[dict]:
    target, draft = load(args.target), load(args.draft)
    rows = []
    for set_name, methods in METHODS.items():
        prompts = resolve_prompts([("--prompts", str(PROMPTS / f"{set_name}.jsonl"))], target.tokenizer)
        for batch in args.batches:
            records = []
            for label in methods:
                print(f"[{set_name}, batch {batch}] jaxspec {label}", file=sys.stderr, flush=True)
                method, opts = method_options(args, label, batch)
                records += [dict(r, method=label) for r in run_jaxspec(opts, method, target, draft, prompts)]
            if batch == 1 and args.compare_hf:
                with tempfile.TemporaryDirectory() as tmp:
                    # transformers takes one length for both: the draft model's K here, prompt lookup's below.
                    opts = options(args, 1, args.draft_tokens, False)
                    records += run_hf(opts, target, draft, prompts, Path(tmp), HF_METHODS[:2])
                    opts = options(args, 1, args.lookup_tokens, False)
                    records += run_hf(opts, target, None, prompts, Path(tmp), HF_METHODS[2:])
            rows += table_rows(set_name, batch, records)
    return rows


def markdown(rows: list[dict], first: str = "prompts") -> str:
    """The rows as a markdown table; `first` names the prompt-set column. Rows that recorded the share of
    the cores other processes used get a column for it."""
    load = all("other_load" in r for r in rows)
    lines = [
        f"| {first} | batch | method | tokens/s | speedup vs jaxspec AR | tokens per target call |"
        + (" others' CPU share |" if load else ""),
        "|---|---:|---|---:|---:|---:|" + ("---:|" if load else ""),
    ]
    for r in rows:
        per_call = f"{r['tokens_per_call']:.2f}" if r["tokens_per_call"] else "–"
        lines.append(
            f"| {r['prompts']} | {r['batch']} | {r['method']} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}x | {per_call} |"
            + (f" {r['other_load']:.0%} |" if load else "")
        )
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    return markdown(summary["rows"])


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["prompts"], r["batch"]) for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs, ys = [], []
        for g, (prompts, batch) in enumerate(groups):
            match = [r for r in rows if (r["prompts"], r["batch"], r["method"]) == (prompts, batch, method)]
            if match:
                xs.append(g + i * width)
                ys.append(match[0]["tokens_per_s"])
        ax.bar(xs, ys, width, label=method)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{p}, batch {b}" for p, b in groups])
    ax.set_ylabel("tokens/s (greedy, float32, CPU)")
    ax.set_title("Demo pair (8.0M target, 0.89M draft): jaxspec methods and transformers")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def add_timing_args(parser: argparse.ArgumentParser) -> None:
    """The flags every speculative bench times with, and --summary."""
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per batch (per prompt for transformers); the median counts")
    parser.add_argument(
        "--max-other-load", type=float, default=0.1,
        help="redo a timed call during which other processes used more than this share of the cores",
    )
    parser.add_argument("--summary", action="store_true", help="also write the table's rows to bench/summaries/ (committed)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.speculative", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="demo/target")
    parser.add_argument("--draft", default="demo/draft")
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--draft-tokens", type=int, default=4, help="K for the draft model")
    parser.add_argument("--lookup-tokens", type=int, default=8, help="K for prompt lookup (jaxspec and transformers)")
    parser.add_argument("--no-compare-hf", dest="compare_hf", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("bench/results/speculative.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/speculative_tokens_per_s.png"))
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    add_timing_args(parser)
    args = parser.parse_args(argv)
    rows = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    if args.summary:
        settings = dict(max_new_tokens=args.max_new_tokens, draft_tokens=args.draft_tokens, lookup_tokens=args.lookup_tokens,
                        ngram=3, repeats=args.repeats, max_other_load=args.max_other_load)
        summaries.write("speculative", "bench.speculative", argv, rows, settings=settings)
    plot(rows, args.plot)
    print(markdown(rows) if args.markdown else json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
