"""The argmax and top-k a decoding step takes over the vocabulary: XLA's reductions against jaxspec/vocab_reduce.py.

    python -m bench.vocab_reduce [--vocab 262144] [--rows 1,8,16,33] [--k 8] [--draft-vocab 2048] [--markdown]

For each row count (batch x window rows scored in one step), the milliseconds of one jitted
jnp.argmax and lax.top_k over [rows, vocab] random float32 logits, and of the blocked versions
(the same answers); the best of --repeats calls counts. Gemma 3's vocabulary by default. Both
argmaxes run again on logits that are -inf outside --draft-vocab ids, as a draft over a context
vocabulary has them (jaxspec/context_vocab.py).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import vocab_reduce


def best_ms(fn, x, repeats: int) -> float:
    fn = jax.jit(fn)
    jax.block_until_ready(fn(x))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=262144)
    ap.add_argument("--rows", default="1,8,16,33")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--draft-vocab", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    k = args.k
    ops = {
        "jnp.argmax": lambda x: jnp.argmax(x, axis=-1),
        "vocab_reduce.argmax": vocab_reduce.argmax,
        f"lax.top_k (k = {k})": lambda x: jax.lax.top_k(x, k),
        f"vocab_reduce.top_k (k = {k})": lambda x: vocab_reduce.top_k(x, k),
    }
    masked = {f"{name}, masked": ops[name] for name in ("jnp.argmax", "vocab_reduce.argmax")}
    rows = []
    for m in (int(r) for r in args.rows.split(",")):
        rng = np.random.default_rng(m)
        x = rng.standard_normal((m, args.vocab)).astype(np.float32)
        x_masked = np.full_like(x, -np.inf)
        kept = rng.permutation(args.vocab)[: args.draft_vocab]
        x_masked[:, kept] = x[:, kept]
        times = {name: best_ms(fn, jnp.asarray(x), args.repeats) for name, fn in ops.items()}
        times |= {name: best_ms(fn, jnp.asarray(x_masked), args.repeats) for name, fn in masked.items()}
        rows.append({"rows": m, **times})
    ops |= masked
    if args.markdown:
        print("| rows | " + " | ".join(f"{n} (ms)" for n in ops) + " |")
        print("|---:|" + "---:|" * len(ops))
        for r in rows:
            print(f"| {r['rows']} | " + " | ".join(f"{r[n]:.2f}" for n in ops) + " |")
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
