"""Greedy decode throughput: transformers vs jaxspec on the same weights.

For each random model size a random LlamaForCausalLM is saved with
save_pretrained into a temp dir and loaded from there by both engines, so both
run exactly the same float32 weights; `gemma3-270m` is the reference model
(Gemma 3 270M, its GGUF dequantized and converted once into the cache), which
both engines load from the same converted directory. Each (model, batch, engine) gets one warm-up call
(jaxspec compiles its loop there) and then `--repeats` timed calls; the
median wall time gives tokens/s = batch × new tokens ÷ seconds. A timed call
during which other processes were busy is redone (jaxspec/machine_load.py). Every row
must produce exactly `--new-tokens` tokens: there is no stop token at all.

    python -m bench.decode --out bench/results/decode.json \\
        --plot docs/img/decode_tokens_per_s.png --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch
import transformers

import jaxspec
from bench import summaries
from bench.configs import LLAMA_COMMON, LLAMA_SIZES
from bench.roofline import read_bandwidth, roofline_fraction
from jaxspec.machine_load import timed

# Hugging Face's default init (0.02) gives near-uniform logits; a larger std
# spreads them so greedy text varies and the agreement check means something.
INIT_STD = 0.05


def build_checkpoint(size: str, out: Path, seed: int = 0) -> None:
    config = transformers.LlamaConfig(**LLAMA_COMMON, **LLAMA_SIZES[size], initializer_range=INIT_STD)
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(out)


REFERENCE = "gemma3-270m"


def hf_engine(path: Path, new_tokens: int):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def run(prompts: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(prompts).long()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        return out[:, prompts.shape[1] :].numpy()

    return run


def jaxspec_engine(path: Path, new_tokens: int):
    loaded = jaxspec.load(path, "float32")

    def run(prompts: np.ndarray) -> np.ndarray:
        gens = jaxspec.generate_ids(loaded.model, loaded.params, prompts.tolist(), max_new_tokens=new_tokens, stop_ids=())
        return np.array([g.output_ids for g in gens])

    return run, loaded.num_params


def quietly(fn, args, label: str):
    """machine_load.timed with this bench's --max-other-load, --patience and --attempts."""
    return timed(fn, max_other_load=args.max_other_load, patience=args.patience, attempts=args.attempts, label=label)


def measure(engines: dict, prompts: np.ndarray, args) -> tuple[dict, list[float]]:
    """One warm-up call per engine, then --repeats timed rounds; the median sets tokens/s.

    The engines take turns within each round, so background load on a shared
    machine hits both alike instead of whichever happened to run second. Each
    round starts with a read-bandwidth sample (bytes/s, returned beside the
    timings): this machine's bandwidth moves by a third between minutes, so a
    round's roofline fraction is taken against the bandwidth of that minute.
    """
    new_tokens = args.new_tokens
    results = {}
    for name, run in engines.items():
        start = time.perf_counter()
        outputs = run(prompts)
        warmup = time.perf_counter() - start
        print(f"  {name}: warm-up {warmup:.1f}s", flush=True)
        if outputs.shape != (len(prompts), new_tokens):
            raise RuntimeError(f"{name} produced {outputs.shape} tokens, expected {(len(prompts), new_tokens)}")
        results[name] = dict(seconds=[], other_load=[], warmup_seconds=warmup, outputs=outputs.tolist())
    bandwidths = []
    for i in range(args.repeats):
        bandwidth, _, _ = quietly(lambda: read_bandwidth(os.cpu_count(), repeats=3), args, f"read bandwidth {i + 1}/{args.repeats}")
        bandwidths.append(bandwidth)
        for name, run in engines.items():
            _, seconds, other = quietly(lambda: run(prompts), args, f"{name}: run {i + 1}/{args.repeats}")
            results[name]["seconds"].append(seconds)
            results[name]["other_load"].append(other)
    for r in results.values():
        r["tokens_per_s"] = len(prompts) * new_tokens / statistics.median(r["seconds"])
    return results, bandwidths


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Greedy outputs of the two engines. Random weights have near-ties, so this is reported, not asserted."""
    same = a == b
    # Once a row diverges, what follows is conditioned on different text.
    prefix = np.where(same.all(axis=1), same.shape[1], np.argmin(same, axis=1))
    return dict(identical_fraction=float(same.mean()), identical_prefix_fraction=float(prefix.mean() / same.shape[1]))


def checkpoint_dir(size: str, tmp: Path) -> tuple[Path, int]:
    """The directory both engines load, and the vocabulary to draw prompts from."""
    if size == REFERENCE:
        from jaxspec import reference_model

        return reference_model.converted_dir(progress=print), 262144
    print(f"[{size}] building a random Llama {LLAMA_SIZES[size]}", flush=True)
    build_checkpoint(size, tmp)
    return tmp, LLAMA_COMMON["vocab_size"]


def bench_size(size: str, args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path, vocab = checkpoint_dir(size, Path(tmp))
        torch.set_num_threads(args.torch_threads)
        hf = hf_engine(path, args.new_tokens)
        ours, num_params = jaxspec_engine(path, args.new_tokens)
        weight_bytes = num_params * 4  # float32
        print(f"[{size}] {num_params / 1e6:.1f}M parameters, {weight_bytes / 1e6:.0f} MB of weights", flush=True)
        all_prompts = np.random.RandomState(0).randint(0, vocab, (max(args.batches), args.prompt_len))
        for batch in args.batches:
            prompts = all_prompts[:batch].astype(np.int32)
            print(f"[{size}] batch {batch}", flush=True)
            timed, bandwidths = measure(dict(transformers=hf, jaxspec=ours), prompts, args)
            hf_result, js_result = timed["transformers"], timed["jaxspec"]
            # One step emits one token per row, and reads the weights once for the whole batch; each
            # round against the bandwidth sampled just before it.
            fractions = [
                roofline_fraction(weight_bytes, args.new_tokens / seconds, bandwidth)
                for seconds, bandwidth in zip(js_result["seconds"], bandwidths)
            ]
            row = dict(
                model=size,
                params=num_params,
                weight_bytes=weight_bytes,
                batch=batch,
                hf=hf_result,
                jaxspec=js_result,
                ratio=js_result["tokens_per_s"] / hf_result["tokens_per_s"],
                read_bandwidth_gb_s=[b / 1e9 for b in bandwidths],
                roofline_fraction=statistics.median(fractions),
                **agreement(np.array(hf_result["outputs"]), np.array(js_result["outputs"])),
            )
            print(
                f"[{size}] batch {batch}: transformers {hf_result['tokens_per_s']:.1f} tok/s, "
                f"jaxspec {js_result['tokens_per_s']:.1f} tok/s, ratio {row['ratio']:.2f}, "
                f"roofline {row['roofline_fraction']:.2f}, identical tokens {row['identical_fraction']:.2f}",
                flush=True,
            )
            rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| model | params | batch | transformers tok/s | jaxspec tok/s | jaxspec ÷ transformers "
        "| jaxspec roofline fraction | identical greedy tokens | others' CPU share (worst timed run) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['batch']} | {r['hf']['tokens_per_s']:.1f} "
            f"| {r['jaxspec']['tokens_per_s']:.1f} | {r['ratio']:.2f}x | {r['roofline_fraction']:.2f} "
            f"| {r['identical_fraction']:.0%} | {max(r['hf']['other_load'] + r['jaxspec']['other_load']):.0%} |"
        )
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    samples = [b for r in summary["rows"] for b in r["read_bandwidth_gb_s"]]
    bandwidth = (
        f"Read bandwidth, measured by the same run before each timed round (the roofline's denominator; "
        f"each round's fraction uses its own sample, the table shows the median): {min(samples):.1f}-{max(samples):.1f} GB/s."
    )
    return f"{markdown_table(summary['rows'])}\n\n{bandwidth}"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["hf"]["tokens_per_s"] for r in rows], 0.4, label="transformers (torch)")
    ax.bar(x + 0.2, [r["jaxspec"]["tokens_per_s"] for r in rows], 0.4, label="jaxspec")
    # The roofline in tokens/s: weight-read-bound steps/s, times the rows each step serves.
    bandwidths = [statistics.median(r["read_bandwidth_gb_s"]) * 1e9 for r in rows]
    roof = [b / r["weight_bytes"] * r["batch"] for b, r in zip(bandwidths, rows)]
    ax.hlines(roof, x - 0.45, x + 0.45, colors="black", linestyles="dashed", label="memory-bandwidth roofline")
    ax.set_xticks(x, [f"{r['model']}\nbatch {r['batch']}" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("new tokens / s (float32, greedy)")
    ax.set_title(f"Decode throughput, {os.cpu_count()} CPU cores, {min(bandwidths) / 1e9:.0f}-{max(bandwidths) / 1e9:.0f} GB/s")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="30m,100m", help=f"comma-separated, from {','.join([*LLAMA_SIZES, REFERENCE])}")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up; the median counts")
    p.add_argument(
        "--max-other-load",
        type=float,
        default=0.1,
        help="redo a timed call if other processes used more than this share of the cores meanwhile",
    )
    p.add_argument("--attempts", type=int, default=4, help="tries per timed call before a noisy one is kept")
    p.add_argument(
        "--patience", type=float, default=120.0, help="longest wait, in seconds, for the others to go idle before a try"
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=os.cpu_count(),
        help="threads for transformers (default: all cores; on a busy machine 1 can be faster)",
    )
    p.add_argument("--out", type=Path, help="write the raw results (JSON) here")
    p.add_argument("--plot", type=Path, help="write a bar chart (PNG) here")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--summary", metavar="NAME", help="also write the table's rows to bench/summaries/NAME.json (committed)")
    args = p.parse_args(argv)
    args.sizes = args.sizes.split(",")
    unknown = [s for s in args.sizes if s not in LLAMA_SIZES and s != REFERENCE]
    if unknown:
        p.error(f"unknown size {unknown[0]!r} (choose from {', '.join([*LLAMA_SIZES, REFERENCE])})")
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    rows = [row for size in args.sizes for row in bench_size(size, args)]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        machine = dict(
            cpu_cores=os.cpu_count(),
            processor=platform.processor() or platform.machine(),
            torch_threads=args.torch_threads,
            versions=dict(jax=jax.__version__, torch=torch.__version__, transformers=transformers.__version__),
        )
        settings = dict(
            prompt_len=args.prompt_len,
            new_tokens=args.new_tokens,
            repeats=args.repeats,
            max_other_load=args.max_other_load,
            init_std=INIT_STD,
        )
        models = {s: {**LLAMA_COMMON, **LLAMA_SIZES[s]} if s in LLAMA_SIZES else "reference model (Gemma 3 270M)" for s in args.sizes}
        args.out.write_text(json.dumps(dict(machine=machine, settings=settings, models=models, results=rows), indent=1))
    if args.summary:
        # The table's figures and the timings behind them; the greedy outputs stay in --out.
        table = [{**r, **{e: {k: v for k, v in r[e].items() if k != "outputs"} for e in ("hf", "jaxspec")}} for r in rows]
        summaries.write(
            args.summary, "bench.decode", argv, table,
            settings=dict(prompt_len=args.prompt_len, new_tokens=args.new_tokens, repeats=args.repeats,
                          torch_threads=args.torch_threads),
        )
    if args.plot:
        plot(rows, args.plot)
    if args.markdown:
        print(markdown_table(rows))


if __name__ == "__main__":
    main()
