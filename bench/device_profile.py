"""On whatever JAX backend this machine has: the forward cost per window width, plain decoding against the
bandwidth roofline, and the speedups that implies for the methods measured on CPU.

    python -m bench.device_profile --out bench/results/device_profile.json --summary --markdown

Built for a short accelerator run (about 5 minutes on a GPU; the repository
alone is enough, no torch and no weights): for each model shape (Gemma 3
270M, the 100M bench Llama, a 1B Llama, random weights in --dtype), at each
batch size,

- c(w) = t(w) / t(1) for one jitted forward of w tokens after 128 cached
  tokens (jaxspec/cost_model.py), the curve every draft is sized from;
- plain decoding tokens/s (128 random prompt tokens, --new-tokens new ones,
  median of 3 after a warm-up) and its fraction of the streaming roofline,
  weight bytes × steps/s ÷ the read bandwidth this script measures (a jitted
  sum over 1 GiB);
- for Gemma 3 270M: the speedup prompt lookup would reach on this device,
  tokens per target call measured on real text on CPU (bench/summaries/
  real_text.json, K = 8, so a 9-token verify) ÷ this device's c(9). It leaves
  out drafting and the loop's bookkeeping, which cost little on a device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench import summaries
from bench.configs import HF_CONFIGS
from bench.forward_cost import check_models_and_widths
from jaxspec.cost_model import DEFAULT_WIDTHS, measure_forward_cost
from jaxspec.generate import generate
from models import build_model

GIB = 1 << 30
REAL_TEXT_VERIFY_WIDTH = 9  # prompt lookup's K = 8 in bench/real_text.py, plus the last token


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_bandwidth(gib: float, repeats: int = 5) -> float:
    """Bytes/s of a jitted sum over `gib` GiB of float32 on the default device, best of `repeats`."""
    data = jnp.ones((int(gib * GIB) // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    total(data).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        total(data).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return data.size * 4 / best


def random_model(name: str, dtype: str, overrides: dict):
    cfg = {**HF_CONFIGS[name], **overrides}
    model = build_model(cfg, dtype)
    params = jax.jit(model.init_params)(jax.random.key(0))
    params = jax.tree_util.tree_map(lambda x: x.astype(dtype), params)
    return model, params


def decode_tokens_per_s(model, params, batch: int, new_tokens: int, repeats: int = 3) -> float:
    prompts = np.random.default_rng(0).integers(0, model.vocab_size, (batch, 128)).tolist()
    run = lambda: generate(model, params, prompts, max_new_tokens=new_tokens, stop_ids=())
    run()  # compile
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return batch * new_tokens / statistics.median(seconds)


def projected_speedups(curve_relative: dict[int, float]) -> list[dict]:
    """Prompt lookup on this device, per real-text category: CPU tokens per call ÷ this device's c(9)."""
    try:
        rows = summaries.read("real_text")["rows"]
    except FileNotFoundError:
        return []
    cost = curve_relative[REAL_TEXT_VERIFY_WIDTH]
    return [
        dict(category=r["prompts"], tokens_per_call=r["tokens_per_call"], verify_cost=cost,
             projected_speedup=r["tokens_per_call"] / cost)
        for r in rows if r["method"] == "prompt-lookup" and r["batch"] == 1
    ]


def run(args) -> dict:
    device = jax.devices()[0]
    _say(f"backend {jax.default_backend()} ({device.device_kind}), {jax.device_count()} device(s)")
    bandwidth = read_bandwidth(args.bandwidth_gib)
    _say(f"read bandwidth {bandwidth / 1e9:.1f} GB/s")
    rows = []
    for name in args.models:
        model, params = random_model(name, args.dtype, args.override)
        n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
        weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))
        for batch in args.batches:
            _say(f"[{name}] batch {batch}: forward cost per width")
            curve = measure_forward_cost(model, params, widths=args.widths, batch_size=batch, repeats=args.repeats)
            _say(f"[{name}] batch {batch}: plain decoding")
            tps = decode_tokens_per_s(model, params, batch, args.new_tokens)
            rows.append(
                dict(model=name, params=n_params, batch=batch, widths=list(curve.widths),
                     ms=[1e3 * s for s in curve.seconds], relative=list(curve.relative()), tokens_per_s=tps,
                     roofline_fraction=weight_bytes * (tps / batch) / bandwidth)
            )
            _say(json.dumps(rows[-1]))
        del params
    gemma = [r for r in rows if r["model"] == "gemma3-270m" and r["batch"] == 1]
    projected = projected_speedups(dict(zip(gemma[0]["widths"], gemma[0]["relative"]))) if gemma else []
    return dict(
        backend=jax.default_backend(), device_kind=device.device_kind, device_count=jax.device_count(),
        read_bandwidth_gb_s=bandwidth / 1e9, dtype=args.dtype, rows=rows, projected=projected,
    )


def markdown(result: dict) -> str:
    widths = result["rows"][0]["widths"]
    lines = [
        f"{result['backend']} ({result['device_kind']}), {result['dtype']}, read bandwidth "
        f"{result['read_bandwidth_gb_s']:.0f} GB/s",
        "",
        "| model | batch | 1 token (ms) | " + " | ".join(f"c({w})" for w in widths) + " | plain tokens/s | roofline fraction |",
        "|---|---:|---:|" + "---:|" * len(widths) + "---:|---:|",
    ]
    for r in result["rows"]:
        cells = " | ".join(f"{c:.2f}" for c in r["relative"])
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['ms'][0]:.2f} | {cells} | {r['tokens_per_s']:.1f} | {r['roofline_fraction']:.2f} |"
        )
    if result["projected"]:
        lines += ["", "| category | prompt lookup tokens per call (CPU) | c(9) here | projected speedup |", "|---|---:|---:|---:|"]
        for p in result["projected"]:
            lines.append(f"| {p['category']} | {p['tokens_per_call']:.2f} | {p['verify_cost']:.2f} | {p['projected_speedup']:.2f}x |")
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    return markdown({**summary["device"], "rows": summary["rows"], "projected": summary["projected"]})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.device_profile", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=lambda s: s.split(","), default=list(HF_CONFIGS), help=f"from {','.join(HF_CONFIGS)}")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    p.add_argument("--widths", type=lambda s: [int(x) for x in s.split(",")], default=[*DEFAULT_WIDTHS, 33])
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per width; the median counts")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--bandwidth-gib", type=float, default=1.0, help="size of the array the bandwidth is read from")
    p.add_argument(
        "--override", type=json.loads, default={},
        help='JSON merged into every config, e.g. \'{"num_hidden_layers": 2}\' for a quick check',
    )
    p.add_argument("--out", type=Path, default=Path("bench/results/device_profile.json"))
    p.add_argument("--summary", action="store_true", help="also write bench/summaries/device_profile_BACKEND.json")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    check_models_and_widths(p, args, HF_CONFIGS)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    if args.summary:
        device = {k: v for k, v in result.items() if k not in ("rows", "projected")}
        summaries.write(
            f"device_profile_{result['backend']}", "bench.device_profile", argv, result["rows"], device=device,
            projected=result["projected"],
        )
    print(markdown(result) if args.markdown else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
