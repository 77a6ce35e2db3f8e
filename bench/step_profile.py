"""Where a plain decoding step's time goes: one traced generate call, its ops summed per step.

    python -m bench.step_profile --size 100m

Decodes one random prompt greedily (float32, batch 1, no stop token) with the
model of bench/decode.py (`30m`, `100m`: random Llamas; `gemma3-270m`: the
reference model), once to compile, then once under `jax.profiler`, and sums
the compiled loop's ops by kind over the decoded steps: the CPU kernels'
products (models/skinny_matmul.py), XLA's dots (attention over the cache, and
any product the kernels do not take), and everything else (norms, RoPE,
softmax, cache writes). The products are also listed one by one in program
order, in microseconds per step, with the read bandwidth each implies, so a
product slower than its neighbours of the same shape stands out.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import jaxspec
from bench.decode import checkpoint_dir

KINDS = (("kernel products", "ffi_call"), ("XLA dots", "dot"))
# Events of the runtime itself, not ops of the program.
RUNTIME = ("ThunkExecutor", "ThreadpoolListener", "SlinkyThreadPool", "$", "end:")


def _trace_events(directory: Path) -> list[dict]:
    (path,) = directory.glob("**/*.trace.json.gz")
    return [e for e in json.load(gzip.open(path))["traceEvents"] if e.get("ph") == "X"]


def profile(model, params, vocab: int, prompt_len: int, new_tokens: int) -> dict:
    """Times one untraced call, then traces one and sums the loop's ops per step (microseconds)."""
    prompt = np.random.RandomState(0).randint(0, vocab, (1, prompt_len)).tolist()

    def run():
        return jaxspec.generate_ids(model, params, prompt, max_new_tokens=new_tokens, stop_ids=())

    run()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as trace:
        jax.profiler.start_trace(trace)
        run()
        jax.profiler.stop_trace()
        events = _trace_events(Path(trace))
    (loop,) = [e for e in events if e["name"].startswith("while")]
    # The loop's event does not span the loop: XLA's runtime carries the loop on to other threads of its pool
    # (on a 100M model, 8 steps: the event ends after 44 ms, its ops run on two threads for 324 ms), so the
    # loop is every op from its start on, on any thread, up to the last one's end.
    inside = [e for e in events if e["ts"] >= loop["ts"] and not e["name"].startswith(("while", *RUNTIME))]
    loop_us = max(e["ts"] + e["dur"] for e in inside) - loop["ts"]
    per_op = collections.defaultdict(float)
    for e in inside:
        per_op[e["name"]] += e["dur"]
    steps = new_tokens - 1  # the first token comes from the prefill, before the loop
    kinds = {label: sum(d for n, d in per_op.items() if n.startswith(prefix + ".")) / steps for label, prefix in KINDS}
    kinds["other ops"] = sum(per_op.values()) / steps - sum(kinds.values())
    products = sorted((int(n.split(".")[1]), d / steps) for n, d in per_op.items() if n.startswith("ffi_call."))
    return dict(ms_per_token=1e3 * seconds / new_tokens, loop_us_per_step=loop_us / steps, kinds_us=kinds,
                products_us=[d for _, d in products])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.step_profile", description=__doc__.splitlines()[0])
    p.add_argument("--size", default="100m", help="30m, 100m or gemma3-270m")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=128)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path, vocab = checkpoint_dir(args.size, Path(tmp))
        lm = jaxspec.load(path, "float32")
    r = profile(lm.model, lm.params, vocab, args.prompt_len, args.new_tokens)
    print(f"{args.size}: {r['ms_per_token']:.2f} ms per token untraced; traced loop {r['loop_us_per_step'] / 1e3:.2f} ms per step")
    for label, us in r["kinds_us"].items():
        print(f"  {label:16s} {us / 1e3:6.2f} ms per step")
    products = r["products_us"]
    print(f"  {len(products)} kernel products per step, in program order (us): " + " ".join(f"{us:.0f}" for us in products))
    print(f"  the products and the rest read the weights at {lm.num_params * 4 / (r['loop_us_per_step'] * 1e-6) / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
