"""Long input, short output: an encoder-decoder beside a decoder-only model of similar size, in jaxspec.

The "Return of the Encoder" claim: for summarisation-shaped work (a long
input, a short output) an encoder-decoder answers sooner and decodes faster
than a decoder-only model with as many layers in all. The encoder reads the
input once, bidirectionally, and each decoding step then runs only the
decoder's half of the layers, attending to a self-attention cache as short as
the output (plus the cross K/V, computed once).

Both models are random Hugging Face models built from configs here (Gemma 2
blocks on both sides: T5Gemma with L encoder + L decoder layers against a
Gemma 2 with 2L layers, same width, heads and vocabulary), saved with
save_pretrained and loaded by jaxspec, greedy, float32, no stop token. For
each model and batch: first-token latency (a generate call of 1 new token),
the whole call for N new tokens, and the decode time per step in between.
Compilation is excluded (one untimed call per shape); timed calls taken while
other processes were busy are redone (jaxspec/machine_load.py).

    python -m bench.encoder_decoder --markdown
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import jax
import numpy as np
import torch
import transformers

import jaxspec
from bench import summaries
from jaxspec.machine_load import timed

WIDTH = dict(
    hidden_size=512,
    intermediate_size=1536,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=64,
    vocab_size=32000,
    max_position_embeddings=4096,
    sliding_window=4096,  # longer than every input: all layers attend globally, as the comparison intends
    bos_token_id=1,
    eos_token_id=None,
    pad_token_id=0,
)
INIT_STD = 0.05


def build(kind: str, layers: int, out: Path) -> None:
    torch.manual_seed(0)
    if kind == "decoder-only":
        config = transformers.Gemma2Config(**WIDTH, num_hidden_layers=2 * layers, initializer_range=INIT_STD)
        transformers.Gemma2ForCausalLM(config).save_pretrained(out)
    else:
        stack = transformers.T5GemmaModuleConfig(**WIDTH, num_hidden_layers=layers, initializer_range=INIT_STD)
        config = transformers.T5GemmaConfig(
            encoder=stack, decoder=stack, vocab_size=WIDTH["vocab_size"], initializer_range=INIT_STD
        )
        transformers.T5GemmaForConditionalGeneration(config).save_pretrained(out)


def measure(lm, prompts: list[list[int]], args) -> dict:
    def call(n):
        return lambda: jaxspec.generate_ids(lm.model, lm.params, prompts, max_new_tokens=n, stop_ids=())

    for n in (1, args.new_tokens):
        call(n)()  # compile
    def median_seconds(fn) -> float:
        tries = [timed(fn, max_other_load=args.max_other_load, attempts=args.attempts) for _ in range(args.repeats)]
        return statistics.median(t.seconds for t in tries)

    first = median_seconds(call(1))
    whole = median_seconds(call(args.new_tokens))
    b = len(prompts)
    return dict(
        first_token_ms=1e3 * first,
        whole_call_s=whole,
        tokens_per_s=b * args.new_tokens / whole,
        decode_ms_per_step=1e3 * (whole - first) / (args.new_tokens - 1),
    )


def non_embedding_params(params) -> int:
    """Parameters outside the embedding tables: what a decoding step reads besides one embedding row
    (a tied head reads its table too, but both models have one tied head)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return sum(x.size for path, x in leaves if "embed" not in jax.tree_util.keystr(path))


def run(args) -> list[dict]:
    rows = []
    rs = np.random.RandomState(0)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("decoder-only", "encoder-decoder"):
            path = Path(tmp) / kind
            build(kind, args.layers, path)
            lm = jaxspec.load(path, "float32")
            for batch in args.batches:
                prompts = rs.randint(3, WIDTH["vocab_size"], (batch, args.input_len)).tolist()
                print(f"[{kind}] batch {batch}", flush=True)
                rows.append(
                    dict(
                        model=kind, params=lm.num_params, non_embedding_params=non_embedding_params(lm.params),
                        batch=batch, **measure(lm, prompts, args),
                    )
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict], new_tokens: int) -> str:
    lines = [
        f"| model | params (non-embedding) | batch | first token (ms) | {new_tokens} tokens (s) | tokens/s | decode ms/step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.1f}M ({r['non_embedding_params'] / 1e6:.1f}M) | {r['batch']} | {r['first_token_ms']:.0f} "
            f"| {r['whole_call_s']:.2f} | {r['tokens_per_s']:.1f} | {r['decode_ms_per_step']:.1f} |"
        )
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    return markdown(summary["rows"], summary["settings"]["new_tokens"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.encoder_decoder", description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=6, help="L: the encoder-decoder has L + L layers, the decoder-only 2L")
    p.add_argument("--input-len", type=int, default=1024)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-other-load", type=float, default=0.1)
    p.add_argument("--attempts", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("bench/results/encoder_decoder.json"))
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--summary", action="store_true", help="also write the table's rows to bench/summaries/ (committed)")
    args = p.parse_args(argv)
    transformers.logging.set_verbosity_error()
    rows = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(settings=vars(args) | {"out": str(args.out)}, width=WIDTH, results=rows), indent=1))
    if args.summary:
        settings = dict(layers=args.layers, input_len=args.input_len, new_tokens=args.new_tokens, repeats=args.repeats)
        summaries.write("encoder_decoder", "bench.encoder_decoder", argv, rows, settings=settings)
    if args.markdown:
        print(markdown(rows, args.new_tokens))


if __name__ == "__main__":
    main()
