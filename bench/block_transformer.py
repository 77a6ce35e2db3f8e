"""Block Transformer vs a vanilla decoder, both trained here on the same data: held-out loss and decoding throughput.

    python -m bench.block_transformer --summary

1. Data: the demo tokenizer (demo/target) over the Python standard library,
   packed in rows of 256 (`jaxspec-train data`), made in runs/block/data if absent.
2. Models, trained by `jaxspec-train lm` on the same rows in the same order
   (equal training tokens), resumable in runs/block/NAME: a Llama-style
   vanilla model (4 layers, width 128) and Block Transformers of block
   length 4: one whose two decoders together have the vanilla's layers and
   width (about equal parameters), deeper ones (2x and 3x the layers) and
   wider ones (widths 192 and 256), to find the parameter ratio that closes
   the loss gap.
3. Held-out cross-entropy of each over the same eval batches.
4. Decoding throughput, vanilla and Block Transformer (equal parameters) in
   the same run on identical shapes: the paper's two settings scaled to this
   machine, decode-heavy (short prompt, long output) and prefill-heavy (long
   prompt, short output), greedy, no stop tokens, so every row decodes the
   same number of tokens. Tokens/s = batch x new tokens / wall time (the
   median of --repeats calls, compilation excluded, calls redone while other
   processes are busy: jaxspec/machine_load.py). The batches: 1, 8, 32 and the
   largest power of two whose decoding fits in 8 GB for both models as
   `jaxspec plan` counts it (params, caches, activations), capped by
   --max-batch so a run ends in minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from bench import summaries
from bench.speculative import add_timing_args
from jaxspec.generate import generate
from jaxspec.loading import load
from jaxspec.machine_load import timed
from jaxspec.memory_plan import plan_memory
from train.cli import main as train_main
from train.evaluate import evaluate_saved

LAYERS = 4  # the vanilla model's; the Block Transformers split (k x LAYERS) between their two decoders
SIZE = ["--heads", "4", "--kv-heads", "2", "--max-positions", "2048"]
# (hidden, intermediate): the vanilla model's width, and the wider Block Transformers'.
WIDTHS = {128: 352, 192: 512, 256: 704}
SCHEDULE = ["--batch-size", "16", "--lr", "2e-3", "--z-loss", "1e-4", "--save-every", "100",
            "--keep", "1", "--eval-every", "0", "--eval-batches", "4"]
GIB = 2**30


def models(scale_max: int, widths: list[int]) -> dict[str, list[str]]:
    """Training flags (beyond data, out, schedule) of each model: the vanilla model, Block Transformers with
    1x .. scale_max x its layers at its width, and ones with its layers at each wider width."""

    def width(w):
        return ["--hidden", str(w), "--intermediate", str(WIDTHS[w])]

    def block(w, half):
        return [*SIZE, *width(w), "--arch", "block", "--block-len", "4", "--layers", str(half), "--token-layers", str(half)]

    runs = {"vanilla": [*SIZE, *width(128), "--layers", str(LAYERS)]}
    for k in range(1, scale_max + 1):
        runs[f"block-{k}x"] = block(128, k * LAYERS // 2)
    for w in widths:
        runs[f"block-w{w}"] = block(w, LAYERS // 2)
    return runs


def prepare_data(runs: Path) -> Path:
    data = runs / "data"
    if not (data / "dataset.json").exists():
        train_main(["data", "--tokenizer", "demo/target", "--seq-len", "256", "--out", str(data)])
    return data


def train_all(runs: Path, data: Path, steps: int, scale_max: int, widths: list[int]) -> dict[str, Path]:
    out = {}
    for name, flags in models(scale_max, widths).items():
        print(f"[train] {name}: {steps} steps", file=sys.stderr, flush=True)
        rc = train_main(["lm", "--data", str(data), "--out", str(runs / name), *flags, *SCHEDULE, "--steps", str(steps),
                         "--warmup", str(min(30, steps // 10))])
        if rc != 0:
            raise SystemExit(f"training {name} failed")
        out[name] = runs / name / "hf"
    return out


def largest_batch(lm, prompt: int, new: int, budget: int = 8 * GIB) -> int:
    """The largest power-of-two batch whose decoding fits the budget as `jaxspec plan` counts it on one
    device (jaxspec/memory_plan.py: params, caches, and the larger of the prefill's and a step's
    activations)."""
    def fits(batch: int) -> bool:
        return plan_memory(lm.model, "data=1", batch, prompt + new + 1, prompt).decode_total <= budget

    batch = 1
    while fits(batch * 2):
        batch *= 2
    return batch


def tokens_per_s(lm, prompts: list[list[int]], new: int, args) -> float:
    def call():
        gens = generate(lm.model, lm.params, prompts, max_new_tokens=new)
        assert all(g.new_tokens == new for g in gens)

    call()  # compile
    tries = [timed(call, max_other_load=args.max_other_load, attempts=3) for _ in range(args.repeats)]
    return len(prompts) * new / statistics.median(t.seconds for t in tries)


def throughput(vanilla, block, settings: dict, args) -> list[dict]:
    rows = []
    tokens = vanilla.tokenizer.encode(Path(__file__).with_name("block_transformer.py").read_text())
    for setting, (prompt, new) in settings.items():
        fits = {name: largest_batch(lm, prompt, new) for name, lm in (("vanilla", vanilla), ("block", block))}
        largest = min(args.max_batch, min(fits.values()))
        for batch in sorted({*args.batches, largest}):
            prompts = [tokens[i : i + prompt] for i in range(batch)]
            print(f"[throughput] {setting} batch {batch}", file=sys.stderr, flush=True)
            v = tokens_per_s(vanilla, prompts, new, args)
            b = tokens_per_s(block, prompts, new, args)
            rows.append(dict(setting=setting, prompt=prompt, new_tokens=new, batch=batch, largest=batch == largest,
                             fits_8gb=fits, vanilla_tok_s=v, block_tok_s=b, ratio=b / v))
    return rows


def markdown(losses: list[dict], rows: list[dict]) -> str:
    vanilla = next(r for r in losses if r["model"] == "vanilla")
    lines = ["| model | parameters | x vanilla | held-out CE | gap to vanilla |", "|---|---|---|---|---|"]
    for r in losses:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['params'] / vanilla['params']:.2f} | "
                     f"{r['eval_ce']:.3f} | {r['eval_ce'] - vanilla['eval_ce']:+.3f} |")
    lines += ["", "| setting | prompt | new | batch | vanilla tok/s | block tok/s | block / vanilla |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        batch = str(r["batch"])
        if r["largest"]:
            fits = min(r["fits_8gb"].values())
            batch += " (largest in 8 GB)" if r["batch"] == fits else f" (cap; {fits:,} fit in 8 GB)"
        lines.append(f"| {r['setting']} | {r['prompt']} | {r['new_tokens']} | {batch} | {r['vanilla_tok_s']:,.0f} | "
                     f"{r['block_tok_s']:,.0f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    return markdown(summary["losses"], summary["rows"])


def plot(losses: list[dict], rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    for i, setting in enumerate(settings):
        sel = [r for r in rows if r["setting"] == setting]
        x = np.arange(len(sel))
        axes[0].bar(x + i * 0.4, [r["ratio"] for r in sel], 0.4, label=setting)
        for j, r in enumerate(sel):
            axes[0].text(j + i * 0.4, r["ratio"], f"b{r['batch']}", ha="center", va="bottom", fontsize=7)
    axes[0].axhline(1.0, color="grey", lw=0.8)
    axes[0].set_xticks([])
    axes[0].set_ylabel("Block / vanilla tokens per second")
    axes[0].set_title("decoding throughput (equal parameters)")
    axes[0].legend()
    vanilla = next(r for r in losses if r["model"] == "vanilla")
    deeper = [r for r in losses if r["model"].startswith("block-") and r["model"].endswith("x")]
    wider = [r for r in losses if r["model"] == "block-1x" or r["model"].startswith("block-w")]
    for label, series in (("Block Transformer, deeper", deeper), ("Block Transformer, wider", wider)):
        axes[1].plot([r["params"] / vanilla["params"] for r in series], [r["eval_ce"] for r in series], "o-", label=label)
    axes[1].axhline(vanilla["eval_ce"], color="black", ls="--", label="vanilla")
    axes[1].set_xlabel("parameters / vanilla's")
    axes[1].set_ylabel("held-out cross-entropy (nats)")
    axes[1].set_title("loss gap at equal training tokens")
    axes[1].legend()
    fig.suptitle("Block Transformer (L=4) vs vanilla, trained here, float32, 2 CPU cores")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.block_transformer", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/block"), help="data and training runs (resumable)")
    p.add_argument("--steps", type=int, default=400, help="training steps of every model (16 rows of 256 tokens each)")
    p.add_argument("--scale-max", type=int, default=3, help="Block Transformers of 1x .. Nx the vanilla's layers")
    p.add_argument("--widths", type=lambda s: [int(x) for x in s.split(",")], default=[192, 256],
                   help=f"Block Transformers with the vanilla's layers at these widths (of {sorted(WIDTHS)})")
    p.add_argument("--eval-batches", type=int, default=32, help="held-out batches of 16 rows")
    p.add_argument("--decode-heavy", default="64,1024", help="PROMPT,NEW tokens")
    p.add_argument("--prefill-heavy", default="1024,64", help="PROMPT,NEW tokens")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--max-batch", type=int, default=256, help="cap on the largest batch (time on this machine)")
    add_timing_args(p)
    p.add_argument("--out", type=Path, default=Path("bench/results/block_transformer.json"))
    p.add_argument("--plot", type=Path, default=Path("docs/img/block_transformer.png"))
    args = p.parse_args(argv)
    settings = {name: tuple(int(x) for x in value.split(",")) for name, value in
                (("decode-heavy", args.decode_heavy), ("prefill-heavy", args.prefill_heavy))}

    data = prepare_data(args.runs)
    dirs = train_all(args.runs, data, args.steps, args.scale_max, args.widths)
    losses = []
    for name, path in dirs.items():
        result = evaluate_saved(path, data, None, 16, args.eval_batches)
        losses.append(dict(model=name, params=result["params"], eval_ce=result["eval_ce"]))
        print(f"[eval] {name}: {result['params']:,} params, CE {result['eval_ce']:.4f}", file=sys.stderr, flush=True)
    vanilla, block = load(dirs["vanilla"]), load(dirs["block-1x"])
    rows = throughput(vanilla, block, settings, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(losses=losses, rows=rows, steps=args.steps), indent=1) + "\n")
    plot(losses, rows, args.plot)
    print(markdown(losses, rows))
    if args.summary:
        summaries.write("block_transformer", "bench.block_transformer", argv, rows, losses=losses, steps=args.steps)


if __name__ == "__main__":
    main()
