"""Training-free methods on the reference model (Gemma 3 270M) and real text, per prompt category.

    python -m bench.training_free --markdown --summary
    python -m bench.training_free --runs layer-skip:4 --summary-name self_speculation --summary
    python -m bench.training_free --runs early-exit:4 --adapter RUN/adapter --summary-name early_exit --summary
    python -m bench.training_free --runs dynamic-exit:4 --summary-name dynamic_exit --summary
    python -m bench.training_free --runs eagle:4,eagle:8,eagle:auto --heads RUN/heads --summary-name heads_gemma --summary
    python -m bench.training_free --runs token-recycling:auto,ngram-trie:auto,token-recycling:80 --hot-start 1 \
        --prompts-per-category 1 --batch 6 --temperatures 0 --repeats 1 --summary-name training_free_sized --summary
    python -m bench.training_free --runs token-recycling:auto,ngram-trie:auto --hot-start 1 --prompts-per-category 2 \
        --batch 8 --batch-only --temperatures 0,0.7 --summary-name training_free_sized_batch8 --summary

For each category of bench/prompts/real/, the first --prompts-per-category
prompts run one at a time (batch 1), greedy and at temperature 0.7, with
plain decoding and each "method:tree size" of --runs (token recycling, the
n-gram trie, prompt lookup as a tree of --lookup-branches, Jacobi,
speculative Jacobi and lookahead with their windows, layer skipping with
its draft length and the skip set searched on each group's prompts, early
exit with its draft length through --adapter, dynamic exit with its most
drafts per step and the share of steps each exit took, draft heads with
their tree's node budget through --heads, or "auto" for the size their
accuracies and the measured cost pick; token recycling's and the trie's
"auto" is their largest tree, a prefix of it verified each step as the
measured cost and the acceptance so far make pay); then all categories'
prompts together run in batches of --batch (category "all"; with
--batch-only, just one batch of the first --batch prompts taken in turn
from each category, and no batch-1 rows). With
--hot-start N, token recycling starts every measured call from one
successor table, filled beforehand by decoding the next N prompts of each
category (not the measured ones), as the paper's table carries over from
question to question. Rows give tokens/s, the speedup over plain decoding
and tokens per target call, and per batch size the tree the head methods'
`--tree-size auto` chooses from the measured forward cost. Timing as in
bench.speculative (compilation excluded, median of --repeats, calls
disturbed by other processes redone).
"""

from __future__ import annotations

import argparse
import functools
import collections
import json
import shutil
import sys
import tempfile
from pathlib import Path

import jax

from bench import summaries
from bench.real_text import CATEGORIES, PROMPTS
from bench.speculative import add_timing_args
from jaxspec import reference_model
from jaxspec.bench import run_jaxspec, summarize
from jaxspec.cli import method_defaults, resolve_prompts
from jaxspec.loading import load
from jaxspec.heads_io import load_heads
from jaxspec.methods import (
    AUTO, DEFAULT_TREE_SIZE, DYNAMIC_EXIT_METHODS, EXIT_METHODS, HEAD_METHODS, JACOBI_METHODS, SELF_DRAFT_VOCAB, SELF_METHODS, auto_tree_size,
    exit_draft_cost, head_accuracy, measured_drafting_cost, rank_accuracy,
)
from jaxspec.sampling import SamplingConfig


def options(args, batch: int, method: str, size: int | None, skip_file: Path | None = None,
            successor_table: Path | None = None) -> argparse.Namespace:
    """`size` is a tree's node count; prompt lookup's depth (its tree --lookup-branches wide); Jacobi's and
    lookahead's window (lookahead's levels and pool from --levels and --pool-size); layer skipping's draft
    length (its searched skip set saved to `skip_file`); early exit's draft length (through --adapter); draft
    heads' node budget (through --heads)."""
    lookup, windowed = method == "prompt-lookup", method in (*JACOBI_METHODS, "lookahead")
    chain = lookup or method in (*SELF_METHODS, *EXIT_METHODS, *DYNAMIC_EXIT_METHODS)
    return argparse.Namespace(**method_defaults() | dict(
        batch_size=batch, max_new_tokens=args.max_new_tokens, dtype="float32", repeats=args.repeats,
        max_other_load=args.max_other_load, tree_size=None if chain or windowed else size,
        num_draft_tokens=size if chain else None, lookup_branches=args.lookup_branches if lookup else 1,
        window=size if windowed else None, levels=args.levels, pool_size=args.pool_size,
        save_skip_layers=skip_file, adapter=args.adapter, heads=args.heads if method in HEAD_METHODS else None,
        successor_table=successor_table,
    ))


def run_group(args, lm, category: str, prompts, batch: int) -> list[dict]:
    rows = []
    for temperature in args.temperatures:
        sampling = SamplingConfig(temperature=temperature)
        labels = [("autoregressive", "autoregressive", None)] + [(f"{m}-{n}", m, n) for m, n in args.runs]
        records = []
        skip_sets = {}
        for label, method, n in labels:
            print(f"[{category}, batch {batch}, T={temperature}] {label}", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                skip_file = Path(tmp) / "skip.json" if method in SELF_METHODS else None
                table = None
                if method == "token-recycling" and args.warm_table is not None:  # a copy: calls save to it
                    table = Path(tmp) / "successors.npz"
                    shutil.copyfile(args.warm_table, table)
                opts = options(args, batch, method, n, skip_file, table)
                records += [dict(r, method=label) for r in run_jaxspec(opts, method, lm, None, prompts, sampling)]
                if skip_file is not None:  # the last batch's set (one batch per group here)
                    skip_sets[label] = json.loads(skip_file.read_text())
            # Each program is used for this group only; kept, dozens of Gemma programs exhaust the
            # process's memory maps and LLVM fails to allocate.
            jax.clear_caches()
        summary = summarize(records)
        base = summary["autoregressive"]["tokens_per_s"]
        for label, method, n in labels:
            s = summary[label]
            row = dict(prompts=category, batch=batch, temperature=temperature, method=label, tree_size=n,
                       speedup=s["tokens_per_s"] / base, **s)
            if label in skip_sets:
                found = skip_sets[label]
                row.update(skip=found["skip"] or "nothing", agreement=found.get("agreement"),
                           draft_cost=found.get("draft_cost"))
            if method in EXIT_METHODS:
                row.update(exit_row(args, lm))
            if method in DYNAMIC_EXIT_METHODS:
                row.update(dynamic_exit_row([r for r in records if r["method"] == label]))
            rows.append(row)
    return rows


def warm_table(args, lm, out: Path) -> Path:
    """Token recycling's successor table after decoding the --hot-start prompts of each category that follow
    the measured ones, one at a time (greedy): what every measured call then starts from."""
    prompts = []
    for category in CATEGORIES:
        found = resolve_prompts([("--prompts", str(PROMPTS / f"{category}.jsonl"))], lm.tokenizer)
        prompts += found[args.prompts_per_category : args.prompts_per_category + args.hot_start]
    print(f"[hot start] filling the successor table from {len(prompts)} prompts", file=sys.stderr, flush=True)
    opts = options(args, 1, "token-recycling", DEFAULT_TREE_SIZE, successor_table=out)
    run_jaxspec(argparse.Namespace(**vars(opts) | dict(repeats=1)), "token-recycling", lm, None, prompts,
                SamplingConfig())
    jax.clear_caches()
    return out


def exit_row(args, lm) -> dict:
    """What an early-exit row shows beside its speed: the exit, the adapter's held-out agreement with the
    target, and the draft's weight share."""
    adapter = load_heads(args.adapter, lm.model).heads
    accuracy = adapter.config.accuracy[0][0] if adapter.config.accuracy else None
    return dict(skip=f"exit:{adapter.config.exit_layer} + adapter", agreement=accuracy,
                draft_cost=exit_draft_cost(lm.model, lm.params, adapter, SELF_DRAFT_VOCAB))


def dynamic_exit_row(records: list[dict]) -> dict:
    """What a dynamic-exit row shows beside its speed: the share of steps each exit drafted (and plain)."""
    steps = collections.Counter()
    for per_exit in {r["batch"]: r["drafter"]["steps_per_exit"] for r in records}.values():
        steps.update(per_exit)
    total = sum(steps.values())
    shares = ", ".join(f"{k if k == 'plain' else 'exit:' + k} {n / total:.0%}" for k, n in steps.items() if n)
    return dict(skip=shares, agreement=None, draft_cost=None)


def auto_choices(args, lm, methods, batches) -> dict:
    """Per method and batch size, the tree `--tree-size auto` picks here (nodes, 0 meaning plain decoding):
    from the measured hit rates, or the heads' held-out accuracies."""
    progress = functools.partial(print, file=sys.stderr)
    choices = {}
    for method in methods:
        heads = load_heads(args.heads, lm.model) if method in HEAD_METHODS else None
        accuracy, build, what = (
            (head_accuracy(heads), dict(heads=heads), "the heads' accuracies") if heads
            else (rank_accuracy(method), {}, "the hit rates")
        )
        for b in batches:
            drafting = measured_drafting_cost(method, lm.model, lm.params, b, progress, **build)
            choices[f"{method}, batch {b}"] = auto_tree_size(accuracy, drafting, lm.model, lm.params, b, what,
                                                             progress=progress)
    return choices


def markdown(rows: list[dict], auto: dict) -> str:
    searched = any("skip" in r for r in rows)
    extra = " skipped sub-layers | agreement | draft cost |" if searched else ""
    lines = [
        "| prompts | batch | temperature | method | tokens/s | speedup vs jaxspec AR | tokens per target call |" + extra,
        "|---|---:|---:|---|---:|---:|---:|" + ("---|---:|---:|" if searched else ""),
    ]
    for r in rows:
        line = (f"| {r['prompts']} | {r['batch']} | {r['temperature']} | {r['method']} | {r['tokens_per_s']:.1f} | "
                f"{r['speedup']:.2f}x | {r['tokens_per_call']:.2f} |")
        if searched:
            number = lambda x: "–" if x is None else f"{x:.2f}"
            line += (f" {r['skip']} | {number(r['agreement'])} | {number(r['draft_cost'])} |" if "skip" in r
                     else " – | – | – |")
        lines.append(line)
    if not auto:
        return "\n".join(lines)
    chosen = ", ".join(f"{key}: {'plain decoding' if n == 0 else f'{n} nodes'}" for key, n in auto.items())
    return "\n".join(lines) + f"\n\n`--tree-size auto` chooses: {chosen}."


def summary_table(summary: dict) -> str:
    return markdown(summary["rows"], summary["auto"])


def plot(rows: list[dict], out: Path) -> None:
    """Tokens per call and speedup per category, one bar per tree size, greedy and T=0.7 side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    groups = list(dict.fromkeys((r["prompts"], r["batch"]) for r in rows))
    series = list(dict.fromkeys((r["method"], r["temperature"]) for r in rows if r["tree_size"]))
    width = 0.8 / len(series)
    for ax, field, title in ((axes[0], "tokens_per_call", "tokens per target call"), (axes[1], "speedup", "speedup vs plain decoding")):
        for i, (method, temperature) in enumerate(series):
            for g, (category, batch) in enumerate(groups):
                match = [r for r in rows if (r["prompts"], r["batch"], r["method"], r["temperature"]) == (category, batch, method, temperature)]
                if match:
                    ax.bar(g + i * width, match[0][field], width, color=f"C{i}", label=f"{method}, T={temperature}" if g == 0 else None)
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
        ax.set_xticklabels([f"{c.replace('_', chr(10))}\nb{b}" for c, b in groups], fontsize=7)
        ax.set_title(title)
        ax.axhline(1.0, color="grey", lw=0.8)
    axes[0].legend(fontsize=7)
    methods = ", ".join(dict.fromkeys(method for method, _ in series))
    fig.suptitle(f"{methods} on Gemma 3 270M, float32, 2 CPU cores")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.training_free", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the reference model (Gemma 3 270M), converted once")
    parser.add_argument("--prompts-per-category", type=int, default=2)
    parser.add_argument(
        "--runs",
        default=[("token-recycling", 16), ("token-recycling", 64), ("ngram-trie", 16), ("prompt-lookup", 8),
                 ("jacobi", 4), ("speculative-jacobi", 4), ("lookahead", 4)],
        type=lambda s: [(m, n if n == AUTO else int(n)) for m, n in (x.rsplit(":", 1) for x in s.split(","))],
        help="method:size, comma-separated (prompt lookup's size is its depth; Jacobi's and lookahead's their window; "
             "draft heads' size may be 'auto')",
    )
    parser.add_argument("--lookup-branches", type=int, default=4)
    parser.add_argument("--levels", type=int, default=3, help="lookahead: n-gram size")
    parser.add_argument("--pool-size", type=int, default=4, help="lookahead: n-grams verified per step")
    parser.add_argument("--adapter", help="early-exit: the exit adapter directory (jaxspec-train early-exit)")
    parser.add_argument("--heads", help="medusa, hydra, eagle: the heads directory (jaxspec-train heads)")
    parser.add_argument("--temperatures", type=lambda s: [float(x) for x in s.split(",")], default=[0.0, 0.7])
    parser.add_argument("--batch", type=int, default=8, help="the batch size of the all-categories rows")
    parser.add_argument("--batch-only", action="store_true",
                        help="only the all-categories rows, over one batch: the first --batch prompts in turn")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--hot-start", type=int, default=0, metavar="N",
                        help="token recycling starts from a table filled by N further prompts per category")
    parser.add_argument("--summary-name", default="training_free", help="bench/summaries/NAME.json, and the "
                        "default results file and plot are named after it")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/NAME.json")
    parser.add_argument("--plot", type=Path, default=None, help="default: docs/img/NAME.png")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    add_timing_args(parser)
    args = parser.parse_args(argv)
    args.out = args.out or Path(f"bench/results/{args.summary_name}.json")
    args.plot = args.plot or Path(f"docs/img/{args.summary_name}.png")
    lm = load(args.model or reference_model.converted_dir())
    work = tempfile.TemporaryDirectory()
    args.warm_table = warm_table(args, lm, Path(work.name) / "warm.npz") if args.hot_start else None
    per_category = {
        category: resolve_prompts([("--prompts", str(PROMPTS / f"{category}.jsonl"))], lm.tokenizer)[: args.prompts_per_category]
        for category in CATEGORIES
    }
    rows = [] if args.batch_only else [row for c, p in per_category.items() for row in run_group(args, lm, c, p, 1)]
    # In turn from each category (each category's first prompt, then its second, ...), so that one batch
    # of --batch-only mixes every category.
    everything = [p for i in range(args.prompts_per_category) for p in (ps[i] for ps in per_category.values() if i < len(ps))]
    rows += run_group(args, lm, "all", everything[: args.batch] if args.batch_only else everything, args.batch)
    trees = [m for m in HEAD_METHODS if m in {method for method, _ in args.runs}]  # the others are sized per step
    auto = auto_choices(args, lm, trees, [1, args.batch])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "auto": auto}, indent=1))
    if args.summary:
        settings = dict(prompts_per_category=args.prompts_per_category, max_new_tokens=args.max_new_tokens,
                        repeats=args.repeats, max_other_load=args.max_other_load)
        settings |= dict(lookup_branches=args.lookup_branches, levels=args.levels, pool_size=args.pool_size,
                         hot_start=args.hot_start, batch_only=args.batch_only)
        summaries.write(args.summary_name, "bench.training_free", argv, rows, settings=settings, auto=auto)
    plot(rows, args.plot)
    print(markdown(rows, auto) if args.markdown else json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
