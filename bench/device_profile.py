"""On whatever JAX backend this machine has: the forward cost per window width, plain decoding against the
bandwidth roofline, and the speedups that implies for the methods measured on CPU.

    python -m bench.device_profile --out bench/results/device_profile.json --summary --markdown

Built for a short accelerator run (the repository alone is enough, no torch
and no weights; compilation dominates: on an H200 Gemma 3 270M and the 100M
model took 8 minutes, the 1B Llama 4, so split a run with --models to fit a
10-minute limit and merge the results with --from-results). For each model
shape (Gemma 3 270M, the 100M bench Llama, a 1B Llama, random weights in
--dtype), at each batch size,

- c(w) = t(w) / t(1) for one forward of w tokens after 128 cached tokens
  (jaxspec/cost_model.py), the curve every draft is sized from, timed
  --per-call forwards at a time inside one compiled loop, as decoding runs
  them;
- plain decoding tokens/s (128 random prompt tokens, --new-tokens new ones,
  median of 3 after a warm-up) and its fraction of the streaming roofline,
  weight bytes × steps/s ÷ the read bandwidth this script measures (a jitted
  sum over 1 GiB);
- for Gemma 3 270M: the speedup every method measured on CPU on real text
  would reach on this device (bench/summaries/real_text.json,
  training_free.json, self_speculation.json, early_exit.json): its tokens
  per target call ÷ (this device's c(w) at the method's verify width, plus
  a self-draft's weight share per drafted token). It leaves out the rest of drafting and
  the loop's bookkeeping, which cost little on a device.

Results are written after every measurement, so a run cut short by its
time limit keeps what it measured.
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
from jaxspec.cost_model import DEFAULT_CONTEXT, DEFAULT_WIDTHS, CostCurve, measure_forward_cost
from jaxspec.drafters.lookahead import Lookahead
from jaxspec.generate import generate
from models import build_model

GIB = 1 << 30
# The CPU summaries whose per-category tokens per call are projected onto this device.
PROJECTED_SUMMARIES = ("real_text", "training_free", "self_speculation", "early_exit")


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


def verify_width(method: str, settings: dict) -> int | None:
    """The window the target scores per step for a row of the CPU summaries (its drafts plus the last
    token); None for plain decoding and for auto-sized runs, whose width changes step by step."""
    if method.startswith(("autoregressive", "hf-")) or method.endswith("-auto"):
        return None
    if method == "prompt-lookup":
        return settings["lookup_tokens"] + 1
    name, size = method.rsplit("-", 1)
    size = int(size)
    if name == "lookahead":
        return Lookahead(window=size, levels=settings["levels"], pool=settings["pool_size"]).num_draft_tokens + 1
    return size + 1  # tree nodes, Jacobi's window or a chain's draft length


def projected_speedups(curves: dict[int, dict[int, float]]) -> list[dict]:
    """Every method measured on CPU on real text, per category, batch and temperature, projected onto this
    device: tokens per call ÷ (c(w) + drafted tokens × a self-draft's weight share), with `curves` the
    measured c(w) of Gemma 3 270M per batch size."""
    projected = []
    for name in PROJECTED_SUMMARIES:
        try:
            summary = summaries.read(name)
        except FileNotFoundError:
            continue
        for r in summary["rows"]:
            width = verify_width(r["method"], summary["settings"])
            curve = curves.get(r["batch"], {})
            if width is None or width not in curve:
                continue
            drafting = (width - 1) * r.get("draft_cost", 0.0)
            cost = curve[width] + drafting
            projected.append(dict(
                summary=name, category=r["prompts"], batch=r["batch"], temperature=r.get("temperature", 0.0),
                method=r["method"], tokens_per_call=r["tokens_per_call"], verify_width=width,
                verify_cost=curve[width], drafting_cost=drafting, cpu_speedup=r["speedup"],
                projected_speedup=r["tokens_per_call"] / cost,
            ))
    return projected


def run(args, argv=None) -> dict:
    device = jax.devices()[0]
    _say(f"backend {jax.default_backend()} ({device.device_kind}), {jax.device_count()} device(s)")
    bandwidth = read_bandwidth(args.bandwidth_gib)
    _say(f"read bandwidth {bandwidth / 1e9:.1f} GB/s")
    result = dict(
        command=summaries.command("bench.device_profile", argv), machine=summaries.machine(),
        backend=jax.default_backend(), device_kind=device.device_kind, device_count=jax.device_count(),
        read_bandwidth_gb_s=bandwidth / 1e9, dtype=args.dtype, per_call=args.per_call, rows=[], projected=[],
    )
    for name in args.models:
        model, params = random_model(name, args.dtype, args.override)
        n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
        weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))
        for batch in args.batches:
            _say(f"[{name}] batch {batch}: forward cost per width")
            curve = measure_forward_cost(model, params, widths=args.widths, batch_size=batch, repeats=args.repeats,
                                         per_call=args.per_call)
            _say(f"[{name}] batch {batch}: plain decoding")
            tps = decode_tokens_per_s(model, params, batch, args.new_tokens)
            result["rows"].append(
                dict(model=name, params=n_params, batch=batch, widths=list(curve.widths),
                     ms=[1e3 * s for s in curve.seconds], relative=list(curve.relative()), tokens_per_s=tps,
                     roofline_fraction=weight_bytes * (tps / batch) / bandwidth)
            )
            _say(json.dumps(result["rows"][-1]))
            write_partial(args.out, result)
        del params
    result["projected"] = projected_speedups(gemma_costs(result["rows"]))
    return result


def gemma_costs(rows: list[dict]) -> dict[int, dict[int, float]]:
    """Gemma 3 270M's c(w) per batch size as the sizing rules read it: non-decreasing in w (a first width
    timed while the device warms up can make wider windows look cheaper than one token)."""
    return {
        r["batch"]: CostCurve(tuple(r["widths"]), tuple(ms / 1e3 for ms in r["ms"]), r["batch"], DEFAULT_CONTEXT).sizing_costs()
        for r in rows if r["model"] == "gemma3-270m"
    }


def merge_results(paths: list[Path]) -> dict:
    """Raw results of several runs on one device (say, a run cut short and one for the models it missed)
    as one result, projected again from the CPU summaries as they are now."""
    results = [json.loads(path.read_text()) for path in paths]
    device = {k: v for k, v in results[0].items() if k not in ("rows", "projected", "command")}
    for other in results[1:]:
        if (other["backend"], other["device_kind"], other["dtype"]) != (device["backend"], device["device_kind"], device["dtype"]):
            raise SystemExit(f"device_profile: {paths} were not measured on one device in one dtype")
    rows = [r for result in results for r in result["rows"]]
    return dict(device, commands=[r.get("command") for r in results], rows=rows,
                projected=projected_speedups(gemma_costs(rows)))


def write_partial(path: Path, result: dict) -> None:
    """What has been measured so far, so that a run stopped by its time limit still leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))


def markdown(result: dict) -> str:
    widths = result["rows"][0]["widths"]
    lines = [
        f"{result['backend']} ({result['device_kind']}), {result['dtype']}, read bandwidth "
        f"{result['read_bandwidth_gb_s']:.0f} GB/s, {result.get('per_call', 1)} forward(s) per timed call"
        + "".join(f"; measured there by `{c}`" for c in result.get("commands", [])),
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
        lines += ["", projection_table(result["projected"])]
    return "\n".join(lines)


def projection_table(projected: list[dict]) -> str:
    """Per method, batch and temperature: the projected speedup over the prompt categories (mean, min, max)
    beside the CPU figures it comes from."""
    groups: dict[tuple, list[dict]] = {}
    for p in projected:
        groups.setdefault((p["method"], p["batch"], p["temperature"]), []).append(p)
    lines = [
        "| method | batch | temperature | categories | tokens per call (CPU, mean) | verify width | c(w) here "
        "| speedup on CPU (mean) | projected speedup here: mean (min–max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (method, batch, temperature), ps in groups.items():
        projected_mean = statistics.mean(p["projected_speedup"] for p in ps)
        low, high = min(p["projected_speedup"] for p in ps), max(p["projected_speedup"] for p in ps)
        lines.append(
            f"| {method} | {batch} | {temperature} | {len(ps)} | {statistics.mean(p['tokens_per_call'] for p in ps):.2f} "
            f"| {ps[0]['verify_width']} | {ps[0]['verify_cost']:.2f} | {statistics.mean(p['cpu_speedup'] for p in ps):.2f}x "
            f"| {projected_mean:.2f}x ({low:.2f}–{high:.2f}x) |"
        )
    return "\n".join(lines)


def plot(result: dict, out: Path) -> None:
    """c(w) per model and batch size on this device (log-scaled widths), with the CPU's Gemma 3 270M
    curve from bench/summaries/forward_cost.json beside it when that file has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in result["rows"]:
        ax.plot(r["widths"], r["relative"], marker="o", linestyle="-" if r["batch"] == 1 else "--",
                label=f"{r['model']}, batch {r['batch']}")
    try:
        cpu = [r for r in summaries.read("forward_cost")["rows"]
               if r.get("model") == "gemma3-270m" and r["batch"] == 1 and r.get("formulation", "xla") != "xla"]
    except FileNotFoundError:
        cpu = []
    for r in cpu[:1]:
        ax.plot(r["widths"], r["relative"], color="black", marker="x", label="gemma3-270m on the CPU (skinny kernel), batch 1")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("window width w (tokens per forward)")
    ax.set_ylabel("c(w) = t(w) / t(1)")
    ax.set_title(f"Forward cost per width, {result['device_kind']}, {result['dtype']}")
    ax.axhline(1.0, color="grey", linewidth=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def summary_table(summary: dict) -> str:
    return markdown({**summary["device"], "rows": summary["rows"], "projected": summary["projected"]})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.device_profile", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=lambda s: s.split(","), default=list(HF_CONFIGS), help=f"from {','.join(HF_CONFIGS)}")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    p.add_argument("--widths", type=lambda s: [int(x) for x in s.split(",")], default=[*DEFAULT_WIDTHS, 33])
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per width; the median counts")
    p.add_argument(
        "--per-call", type=int, default=16,
        help="forwards per timed call, in one compiled loop, so the host's dispatch drops out as in decoding "
        "(1: one forward per call, as the H200 figures of 2026-12-04 were timed)",
    )
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--bandwidth-gib", type=float, default=1.0, help="size of the array the bandwidth is read from")
    p.add_argument(
        "--override", type=json.loads, default={},
        help='JSON merged into every config, e.g. \'{"num_hidden_layers": 2}\' for a quick check',
    )
    p.add_argument("--out", type=Path, default=Path("bench/results/device_profile.json"))
    p.add_argument("--summary", action="store_true", help="also write bench/summaries/device_profile_BACKEND[_DTYPE].json (DTYPE unless float32)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--plot", type=Path, help="draw c(w) per model and batch here (PNG)")
    p.add_argument(
        "--from-results", type=Path, nargs="+", metavar="JSON",
        help="measure nothing: merge these raw results of one device and project them again (with --summary, "
             "its summary records their commands)",
    )
    args = p.parse_args(argv)
    if args.from_results:
        result = merge_results(args.from_results)
    else:
        check_models_and_widths(p, args, HF_CONFIGS)
        result = run(args, argv)
        write_partial(args.out, result)
    if args.summary:
        device = {k: v for k, v in result.items() if k not in ("rows", "projected", "machine")}
        name = f"device_profile_{result['backend']}" + ("" if result["dtype"] == "float32" else f"_{result['dtype']}")
        summaries.write(
            name, "bench.device_profile", argv, result["rows"], measured_on=result["machine"], device=device,
            projected=result["projected"],
        )
    if args.plot:
        plot(result, args.plot)
    print(markdown(result) if args.markdown else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
