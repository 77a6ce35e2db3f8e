"""What one target forward costs per window width, relative to one token: the curve speculation has to beat.

    python -m bench.forward_cost --summary --markdown

For each model (default: the demo pair's target and draft, and the reference
model, Gemma 3 270M), float32, one jitted forward of w tokens after
`--context` cached tokens at each batch size, the cache donated and fed back
as in the decode loop (jaxspec/cost_model.py); the median of `--repeats`
calls per width, each width compiled first. Each model's curve records the
share of the cores other processes took meanwhile, and is redone if they
took more than --max-other-load.

Each curve is measured once per --formulations entry: `xla` runs every
product through XLA's dot, `kernel` routes few-row float32 products through
the CPU kernel of models/skinny_matmul.py where its ROW_RANGE says (what
jaxspec does by default), so the two curves come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench import summaries
from jaxspec import reference_model
from jaxspec.cost_model import DEFAULT_WIDTHS, measure_forward_cost
from jaxspec.loading import load
from models import skinny_matmul
from jaxspec.machine_load import timed

MODELS = {"demo-target": "demo/target", "demo-draft": "demo/draft", "gemma3-270m": None}
# JAXSPEC_MATMUL for each formulation (read when a forward is traced).
FORMULATIONS = {"xla": "xla", "kernel": "auto"}


def run(args) -> list[dict]:
    rows = []
    for name in args.models:
        path = MODELS[name] or reference_model.converted_dir(progress=lambda m: print(m, file=sys.stderr))
        lm = load(path, "float32")
        for batch in args.batches:
            for name_f in args.formulations:
                os.environ["JAXSPEC_MATMUL"] = FORMULATIONS[name_f]
                print(f"[{name}] batch {batch}, {skinny_matmul.formulation()}", file=sys.stderr, flush=True)
                t = timed(
                    lambda: measure_forward_cost(
                        lm.model, lm.params, widths=args.widths, batch_size=batch, context=args.context,
                        repeats=args.repeats,
                    ),
                    max_other_load=args.max_other_load, attempts=3,
                )
                curve = t.value
                rows.append(
                    dict(model=name, params=lm.num_params, batch=batch, formulation=skinny_matmul.formulation(),
                         context=curve.context, widths=list(curve.widths), ms=[1e3 * s for s in curve.seconds],
                         relative=list(curve.relative()), other_load=t.other_load)
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    os.environ.pop("JAXSPEC_MATMUL", None)
    return rows


def markdown(rows: list[dict]) -> str:
    """One row per model, batch and formulation: ms at width 1, then c(w) = t(w) / t(1) for each width."""
    widths = rows[0]["widths"]
    lines = [
        "| model | params | batch | products | 1 token (ms) | " + " | ".join(f"c({w})" for w in widths)
        + " | others' CPU share |",
        "|---|---:|---:|---|---:|" + "---:|" * len(widths) + "---:|",
    ]
    for r in rows:
        cells = " | ".join(f"{c:.2f}" for c in r["relative"])
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['batch']} | {r.get('formulation', 'xla')} "
            f"| {r['ms'][0]:.2f} | {cells} | {r['other_load']:.0%} |"
        )
    return "\n".join(lines)


def check_models_and_widths(parser: argparse.ArgumentParser, args, known) -> None:
    """--models from `known`, and --widths including 1 (every cost is relative to it): else a usage error."""
    unknown = [m for m in args.models if m not in known]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r} (choose from {', '.join(known)})")
    if 1 not in args.widths:
        parser.error("--widths must include 1: every cost is relative to a one-token forward")


def plot(rows: list[dict], model: str, out: Path) -> None:
    """c(w) of one model per batch and formulation, and the milliseconds behind them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rel, ms) = plt.subplots(1, 2, figsize=(10, 4))
    for r in (r for r in rows if r["model"] == model):
        style = dict(marker="o", linestyle="-" if r["formulation"] != "xla" else "--",
                     label=f"batch {r['batch']}, {r['formulation'].split()[0]}")
        rel.plot(r["widths"], r["relative"], **style)
        ms.plot(r["widths"], r["ms"], **style)
    for ax in (rel, ms):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("window width w (tokens per forward)")
        ax.legend(fontsize=7)
    rel.set_ylabel("c(w) = t(w) / t(1)")
    rel.axhline(1.0, color="grey", linewidth=0.5)
    ms.set_ylabel("ms per forward")
    ms.set_yscale("log")
    fig.suptitle(f"{model}, float32, forward cost per width: XLA's dot vs the skinny kernel")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def summary_table(summary: dict) -> str:
    return markdown(summary["rows"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.forward_cost", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    p.add_argument("--widths", type=lambda s: [int(x) for x in s.split(",")], default=list(DEFAULT_WIDTHS))
    p.add_argument("--context", type=int, default=128, help="cached tokens before the window")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per width; the median counts")
    p.add_argument("--max-other-load", type=float, default=0.1, help="redo a curve during which other processes used more than this share of the cores")
    p.add_argument("--out", type=Path, default=Path("bench/results/forward_cost.json"))
    p.add_argument("--summary", action="store_true", help="also write the table's rows to bench/summaries/ (committed)")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument(
        "--formulations", type=lambda s: s.split(","), default=list(FORMULATIONS),
        help="comma-separated, from xla (XLA's dot for every product) and kernel (jaxspec's default: the CPU "
             "kernel for few-row float32 products)",
    )
    p.add_argument("--plot", type=Path, help="draw the last model's curves per batch and formulation here (PNG)")
    args = p.parse_args(argv)
    check_models_and_widths(p, args, MODELS)
    if any(f not in FORMULATIONS for f in args.formulations):
        p.error(f"--formulations: choose from {', '.join(FORMULATIONS)}")
    if "kernel" in args.formulations and not skinny_matmul.available():
        p.error("--formulations kernel: models/_skinny_matmul was not built (reinstall with a C++ compiler)")
    rows = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    if args.summary:
        settings = dict(context=args.context, repeats=args.repeats, dtype="float32")
        summaries.write("forward_cost", "bench.forward_cost", argv, rows, settings=settings)
    if args.plot:
        plot(rows, args.models[-1], args.plot)
    print(markdown(rows) if args.markdown else json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
