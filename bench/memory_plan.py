"""Memory plans on paper: Gemma-3-27B- and Llama-3-70B-sized models on v5e-64 and v5p-128 slices.

What `jaxspec plan` prints for each model, slice and job, from the config alone (bench/configs.py),
against the slice's memory per chip. Both slices have 64 chips (a v5p chip is two TensorCores that
JAX sees as one device): 16 GiB of HBM each on v5e, 95 GiB on v5p. Decoding holds the params in
bfloat16 with a KV cache of --max-len slots; training keeps float32 params and AdamW moments and
computes in bfloat16, with no rematerialisation (jaxspec's trainer has none).

    python -m bench.memory_plan --summary --plot docs/img/memory_plan.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import summaries
from bench.configs import HF_CONFIGS
from jaxspec.memory_plan import plan_memory
from models import build_model

MODELS = ("gemma3-27b", "llama3-70b")
SLICES = {"v5e-64": 16.0, "v5p-128": 95.0}  # GiB of HBM per chip; 64 chips each
# (job, mesh, batch, tokens): decoding shards rows over data and heads over tensor (8 KV heads divide 8),
# or also the params' embedding dimension over fsdp (gathered per layer as it runs); training shards params
# and rows over fsdp, heads and the MLP over tensor.
JOBS = (
    ("decode", "data=8,tensor=8", 64, 8192),
    ("decode", "data=8,tensor=8", 16, 4096),
    ("decode", "fsdp=8,tensor=8", 16, 4096),
    ("train", "fsdp=16,tensor=4", 64, 2048),
    ("train", "fsdp=64", 64, 2048),
)
GIB = 2**30


def plan_rows() -> list[dict]:
    rows = []
    for name in MODELS:
        model = build_model(HF_CONFIGS[name], "bfloat16")
        for job, mesh, batch, tokens in JOBS:
            plan = plan_memory(model, mesh, batch, tokens)
            if job == "decode":
                parts = dict(params=plan.params, kv_cache=plan.kv_cache, activations=plan.decode_activations)
            else:
                parts = dict(params=plan.train_params, optimizer=plan.optimizer, gradients=plan.gradients,
                             activations=plan.train_activations)
            total = sum(parts.values())
            rows.append(dict(
                model=name, job=job, mesh=mesh, batch=batch, tokens=tokens, **{k: v / GIB for k, v in parts.items()},
                total_gib=total / GIB, fits={s: total <= hbm * GIB for s, hbm in SLICES.items()},
                fallbacks=list(plan.fallbacks),
            ))
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| model | job | mesh | batch × tokens | params | KV cache | optimizer | gradients | activations (est.) "
            "| total GiB/chip | " + " | ".join(f"fits {s} ({hbm:g} GiB)" for s, hbm in SLICES.items()) + " |")
    lines = [head, "|" + "---|" * (10 + len(SLICES))]
    cell = lambda r, k: f"{r[k]:.1f}" if k in r else "–"
    for r in rows:
        fits = " | ".join("yes" if r["fits"][s] else "no" for s in SLICES)
        lines.append(
            f"| {r['model']} | {r['job']} | `{r['mesh']}` | {r['batch']} × {r['tokens']} | {cell(r, 'params')} | "
            f"{cell(r, 'kv_cache')} | {cell(r, 'optimizer')} | {cell(r, 'gradients')} | {cell(r, 'activations')} | "
            f"{r['total_gib']:.1f} | {fits} |"
        )
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    return markdown(summary["rows"])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = ("params", "kv_cache", "optimizer", "gradients", "activations")
    labels = [f"{r['model']} {r['job']} {r['batch']}×{r['tokens']}  {r['mesh']}" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 5))
    left = [0.0] * len(rows)
    for part in parts:
        values = [r.get(part, 0.0) for r in rows]
        ax.barh(range(len(rows)), values, left=left, label=part.replace("_", " "))
        left = [x + v for x, v in zip(left, values)]
    for (name, hbm), style in zip(SLICES.items(), ("--", ":")):
        ax.axvline(hbm, color="black", linestyle=style, linewidth=1, label=f"{name}: {hbm:g} GiB per chip")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("GiB per chip")
    ax.set_title("jaxspec plan: bytes per chip on a 64-chip slice")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.memory_plan", description=__doc__.splitlines()[0])
    p.add_argument("--summary", action="store_true", help="write the rows to bench/summaries/ (committed)")
    p.add_argument("--plot", type=Path, help="draw the bytes per chip here (PNG)")
    args = p.parse_args(argv)
    rows = plan_rows()
    print(markdown(rows))
    if args.summary:
        summaries.write("memory_plan", "bench.memory_plan", argv, rows)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
