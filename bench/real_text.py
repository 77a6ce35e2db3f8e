"""Every decoding method on the reference model (Gemma 3 270M) and real text, per prompt category, beside transformers.

    python -m bench.real_text --out bench/results/real_text.json --plot docs/img/real_text_speedup.png --markdown

For each category of bench/prompts/real/ (Spec-Bench-style: multi-turn,
summarization, QA, code completion, code editing, rewriting), the first
`--prompts-per-category` prompts run greedily in float32 with every jaxspec
method that applies to a model without a draft (autoregressive, prompt
lookup), at each batch size; at batch 1 transformers' greedy generate and its
prompt lookup run on the same weights (the converted directory), with the same
n-gram size and draft length as jaxspec's. Compilation is excluded (each
shape runs once untimed first); every batch (every prompt, for transformers)
is timed --repeats times and the median counts; a call other processes
disturbed is redone once they are idle. Each row records the largest share of the cores other
processes took during its timed calls (jaxspec/machine_load.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench import summaries
from bench.speculative import add_timing_args, markdown, method_options, options, table_rows
from jaxspec import reference_model
from jaxspec.bench import run_hf, run_jaxspec
from jaxspec.cli import resolve_prompts
from jaxspec.loading import load

PROMPTS = Path(__file__).parent / "prompts" / "real"
CATEGORIES = ("multi_turn", "summarization", "qa", "code_completion", "code_editing", "rewriting")
METHODS = ("autoregressive", "prompt-lookup", "prompt-lookup-auto")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_category(args, lm, category: str) -> list[dict]:
    prompts = resolve_prompts([("--prompts", str(PROMPTS / f"{category}.jsonl"))], lm.tokenizer)[: args.prompts_per_category]
    rows = []
    for batch in args.batches:
        records = []
        for label in METHODS:
            _say(f"[{category}, batch {batch}] jaxspec {label}")
            method, opts = method_options(args, label, batch)
            records += [dict(r, method=label) for r in run_jaxspec(opts, method, lm, None, prompts)]
        if batch == 1 and args.compare_hf:
            _say(f"[{category}, batch 1] transformers generate and prompt lookup")
            with tempfile.TemporaryDirectory() as tmp:
                records += run_hf(options(args, 1, args.lookup_tokens, False), lm, None, prompts, Path(tmp))
        for row in table_rows(category, batch, records):
            rows.append(dict(row, count=len(prompts)))
            per_call = f", {row['tokens_per_call']:.2f} tokens/call" if row["tokens_per_call"] else ""
            _say(f"  {row['method']}: {row['tokens_per_s']:.1f} tok/s, {row['speedup']:.2f}x{per_call}")
    return rows


def summary_table(summary: dict) -> str:
    return markdown(summary["rows"], first="category")


def plot(rows: list[dict], out: Path) -> None:
    """Speedup over jaxspec autoregressive per category, one panel per batch size; tokens per call on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    categories = list(dict.fromkeys(r["prompts"] for r in rows))
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "autoregressive"]
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.2), squeeze=False, sharey=True)
    width = 0.8 / max(len(methods), 1)
    for ax, batch in zip(axes[0], batches):
        for i, method in enumerate(methods):
            for c, category in enumerate(categories):
                match = [r for r in rows if (r["prompts"], r["batch"], r["method"]) == (category, batch, method)]
                if not match:
                    continue
                r = match[0]
                x = c + i * width
                ax.bar(x, r["speedup"], width, color=f"C{i}", label=method if c == 0 else None)
                if r["tokens_per_call"]:
                    ax.text(x, r["speedup"], f"{r['tokens_per_call']:.1f}", ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="black", linestyle="dashed", linewidth=1)
        ax.set_xticks([c + 0.4 - width / 2 for c in range(len(categories))])
        ax.set_xticklabels([c.replace("_", "\n") for c in categories], fontsize=8)
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("speedup over jaxspec autoregressive")
        ax.legend(fontsize=7)
    fig.suptitle("Gemma 3 270M, greedy float32, 2 CPU cores (numbers on bars: tokens per target call)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.real_text", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the reference model (Gemma 3 270M), converted once")
    parser.add_argument("--categories", default=",".join(CATEGORIES))
    parser.add_argument("--prompts-per-category", type=int, default=8)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--lookup-tokens", type=int, default=8, help="K for prompt lookup (jaxspec and transformers)")
    parser.add_argument("--no-compare-hf", dest="compare_hf", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("bench/results/real_text.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/real_text_speedup.png"))
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--update", action="store_true", help="keep --out's rows of the categories not run now (to redo noisy ones)"
    )
    add_timing_args(parser)
    args = parser.parse_args(argv)
    path = args.model or reference_model.converted_dir(progress=_say)
    lm = load(path)
    categories = args.categories.split(",")
    rows = [row for category in categories for row in run_category(args, lm, category)]
    if args.update and args.out.exists():
        kept = [r for r in json.loads(args.out.read_text())["rows"] if r["prompts"] not in categories]
        order = {c: i for i, c in enumerate(CATEGORIES)}
        rows = sorted(kept + rows, key=lambda r: order.get(r["prompts"], len(order)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(model=str(path), settings=vars(args) | {"out": str(args.out), "plot": str(args.plot)}, rows=rows), indent=1))
    plot(rows, args.plot)
    if args.summary:
        settings = dict(prompts_per_category=args.prompts_per_category, max_new_tokens=args.max_new_tokens,
                        lookup_tokens=args.lookup_tokens, ngram=3, repeats=args.repeats, max_other_load=args.max_other_load)
        summaries.write("real_text", "bench.real_text", argv, rows, settings=settings)
    print(markdown(rows, first="category") if args.markdown else json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
