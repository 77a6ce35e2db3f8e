"""Draft heads (Medusa, Hydra++, EAGLE) on the demo target: tokens per target call and speedup over autoregressive decoding.

    python -m bench.heads --summary --markdown

For each prompt set (bench/prompts/code.jsonl, quote.jsonl), batch size,
sampling setting (greedy; temperature 0.7, seeded) and tree size (and
"auto": the size that the heads' accuracies and the measured cost pick,
jaxspec/methods.py), jaxspec decodes the same prompts plainly and with each
shipped heads directory (demo/heads: Medusa, demo/hydra: Hydra++, demo/eagle:
EAGLE; made by train/recipes/demo.sh), by the method of the heads' kind, float32. A point-mass tree emits the target's
own draws, so sampled runs emit the same tokens as plain sampling with the
same seeds and the two are timed on identical work. Beside the table, the
target's measured forward cost per window width (jaxspec/cost_model.py): a
tree of n nodes is verified by a window of n + 1 tokens, so the speedup is at
most tokens per call / c(n + 1). Timing as in bench/speculative.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax

from bench import summaries
from bench.speculative import add_timing_args
from jaxspec.bench import run_jaxspec, summarize
from jaxspec.cli import method_defaults, resolve_prompts
from jaxspec.cost_model import cost_curve
from jaxspec.heads_io import load_heads
from jaxspec.loading import load
from jaxspec.methods import AUTO
from jaxspec.sampling import SamplingConfig

PROMPTS = Path(__file__).parent / "prompts"
SETS = ("code", "quote")


def options(args, batch: int, heads: str | None, tree_size: int | None) -> argparse.Namespace:
    """The flags `jaxspec bench` would parse, for its runner."""
    return argparse.Namespace(**method_defaults() | dict(
        batch_size=batch, max_new_tokens=args.max_new_tokens, num_draft_tokens=None, dtype="float32",
        repeats=args.repeats, max_other_load=args.max_other_load, heads=heads, tree_size=tree_size,
    ))


def run(args) -> tuple[list[dict], dict]:
    target = load(args.target)
    # A bad heads directory fails before any timing; each drafts by the method of its kind.
    kinds = {heads: load_heads(heads, target.model).heads.config.kind for heads in args.heads}
    rows, curves = [], {}
    for batch in args.batches:
        curve = cost_curve(target.model, target.params, batch_size=batch, widths=sorted({1, *(n + 1 for n in args.tree_sizes)}))
        curves[str(batch)] = {str(w): c for w, c in zip(curve.widths, curve.relative())}
        for set_name in SETS:
            prompts = resolve_prompts([("--prompts", str(PROMPTS / f"{set_name}.jsonl"))], target.tokenizer)
            for temperature in args.temperatures:
                sampling = SamplingConfig(temperature=temperature)
                records = []
                labels = [("autoregressive", "autoregressive", None, None)] + [
                    (f"{kind}-{n}", kind, heads, n) for heads, kind in kinds.items() for n in (*args.tree_sizes, AUTO)
                ]
                for label, method, heads, n in labels:
                    print(f"[{set_name}, batch {batch}, T={temperature}] {label}", file=sys.stderr, flush=True)
                    opts = options(args, batch, heads, n)
                    records += [dict(r, method=label) for r in run_jaxspec(opts, method, target, None, prompts, sampling)]
                    # Kept, the dozens of programs of a run (a width switch each) exhaust the process's memory
                    # maps and LLVM fails to allocate (bench/training_free.py does the same).
                    jax.clear_caches()
                summary = summarize(records)
                base = summary["autoregressive"]["tokens_per_s"]
                for label, _, _, n in labels:
                    s = summary[label]
                    rows.append(dict(prompts=set_name, batch=batch, temperature=temperature, method=label,
                                     tree_size=n, speedup=s["tokens_per_s"] / base, **s))
    return rows, curves


def markdown(rows: list[dict], curves: dict) -> str:
    lines = [
        "| prompts | batch | temperature | method | tokens/s | speedup vs jaxspec AR | tokens per target call | verify cost c(n+1) |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = r["tree_size"]
        cost = f"{curves[str(r['batch'])][str(n + 1)]:.2f}" if isinstance(n, int) else "–"
        lines.append(
            f"| {r['prompts']} | {r['batch']} | {r['temperature']} | {r['method']} | {r['tokens_per_s']:.1f} | "
            f"{r['speedup']:.2f}x | {r['tokens_per_call']:.2f} | {cost} |"
        )
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    return markdown(summary["rows"], summary["cost_curves"])


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    kinds = sorted({r["method"].rsplit("-", 1)[0] for r in rows} - {"autoregressive"})
    groups = sorted({(r["prompts"], r["batch"], r["temperature"]) for r in rows})
    for ax, field, title in ((axes[0], "tokens_per_call", "tokens per target call"), (axes[1], "speedup", "speedup vs autoregressive")):
        for i, (prompts, batch, temperature) in enumerate(groups):
            for kind, style in zip(kinds, ("-", "--", ":")):
                sub = [r for r in rows if (r["prompts"], r["batch"], r["temperature"]) == (prompts, batch, temperature)
                       and isinstance(r["tree_size"], int) and r["method"].startswith(kind + "-")]
                ax.plot([r["tree_size"] for r in sub], [r[field] for r in sub], marker="o", ls=style, color=f"C{i}",
                        label=f"{kind}: {prompts}, batch {batch}, T={temperature}")
        ax.set_xlabel("tree size (nodes)")
        ax.set_title(title)
        ax.set_xscale("log", base=2)
    axes[1].axhline(1.0, color="grey", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Draft heads on the demo target (8.0M, CPU, float32): {', '.join(kinds)}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.heads", description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="demo/target")
    parser.add_argument("--heads", nargs="+", default=["demo/heads", "demo/hydra", "demo/eagle"], help="heads directories")
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--temperatures", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 0.7])
    parser.add_argument("--tree-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 16])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("bench/results/heads.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/heads.png"))
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    add_timing_args(parser)
    args = parser.parse_args(argv)
    rows, curves = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "cost_curves": curves}, indent=1))
    if args.summary:
        settings = dict(max_new_tokens=args.max_new_tokens, repeats=args.repeats, max_other_load=args.max_other_load)
        summaries.write("heads", "bench.heads", argv, rows, settings=settings, cost_curves=curves)
    plot(rows, args.plot)
    print(markdown(rows, curves) if args.markdown else json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
