"""How fast one few-row product reads its weights: XLA's dot against the CPU kernels, per Gemma 3 270M shape.

    python -m bench.matmul_bandwidth [--rows 1,2,5,9,16] [--markdown]

For each weight shape of Gemma 3 270M (the layers' Dense kernels, stored [in, out], and the tied head,
[vocab, hidden]) and each row count, the GB/s of weight bytes read by one product, through XLA's dot
and through models/skinny_matmul.py's kernel called directly (whatever ROW_RANGE says). The weights
come from memory, as in decoding: enough distinct random matrices to pass --stream-mb, each used once
per pass, three passes in one jitted program, and each product's input made to depend on the previous
output so that XLA merges nothing; the best of --repeats calls counts. Speed does not depend on values.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from models import skinny_matmul

# (name, layout, K, N): y[M, N] = x[M, K] w, with w [K, N] ("nn") or [N, K] ("nt").
SHAPES = (
    ("gate/up_proj", "nn", 640, 2048),
    ("down_proj", "nn", 2048, 640),
    ("q_proj", "nn", 640, 1024),
    ("o_proj", "nn", 1024, 640),
    ("k/v_proj", "nn", 640, 256),
    ("tied head", "nt", 640, 262144),
)
PASSES = 3


def product(formulation: str, layout: str, x, w):
    if formulation == "kernel":
        return skinny_matmul._kernel(layout, x, w)
    return x @ w.T if layout == "nt" else x @ w


def gbps(formulation: str, layout: str, k: int, n: int, rows: int, stream_bytes: float, repeats: int) -> float:
    count = max(2, int(stream_bytes // (k * n * 4)))
    shape = (n, k) if layout == "nt" else (k, n)
    weights = [jax.random.normal(jax.random.key(i), shape, jnp.float32) for i in range(count)]
    x = jax.random.normal(jax.random.key(count), (rows, k), jnp.float32)

    def passes(x, weights):
        carry = jnp.float32(0)
        for _ in range(PASSES):
            for w in weights:
                y = product(formulation, layout, x + carry * 1e-30, w)
                carry = carry + y[0, 0]
        return carry

    fn = jax.jit(passes)
    fn(x, weights).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x, weights).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return PASSES * count * k * n * 4 / best / 1e9


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.matmul_bandwidth", description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=lambda s: [int(r) for r in s.split(",")], default=[1, 2, 5, 9, 16])
    p.add_argument("--stream-mb", type=float, default=160.0, help="weights per pass (past the L3 cache)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--markdown", action="store_true", help="print a markdown table instead of JSON lines")
    args = p.parse_args(argv)
    if not skinny_matmul.available():
        p.error("the CPU kernel was not built (models/_skinny_matmul): reinstall with a C++ compiler")
    if args.markdown:
        print("| weights | layout | K × N | rows | XLA GB/s | kernel GB/s |")
        print("|---|---|---|---:|---:|---:|")
    for name, layout, k, n in SHAPES:
        for rows in args.rows:
            row = dict(weights=name, layout=layout, k=k, n=n, rows=rows)
            for formulation in ("xla", "kernel"):
                row[formulation] = gbps(formulation, layout, k, n, rows, args.stream_mb * 1e6, args.repeats)
            if args.markdown:
                print(f"| {name} | {layout} | {k} × {n} | {rows} | {row['xla']:.1f} | {row['kernel']:.1f} |",
                      flush=True)
            else:
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
