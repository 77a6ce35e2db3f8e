"""HAT vs a BPE decoder-only model, both trained here on the same text: bits per byte clean and under noise, and
decoding bytes per second.

    python -m bench.hat --summary

1. Data: the Python standard library (`jaxspec-train data`). The BPE model's
   rows are bench/block_transformer.py's (the demo tokenizer, 256 tokens a
   row); the HAT's are raw bytes (`--bytes`) in rows of the same text length
   (256 tokens x the training split's bytes per token).
2. Models, each trained by `jaxspec-train lm` for the same steps of 16 rows,
   so both read the same amount of text: the BPE model is the block
   bench's vanilla model (reused from runs/block/vanilla when present); the
   HAT's backbone has its layers and width, its byte encoder and decoder are
   two layers each of width 64, so that both spend about the same training
   FLOPs per row (reported: 6 x matmul params x positions, each stack at
   its own rate: bytes, word slots, tokens).
3. Bits per byte on held-out files (chunks of --chunk-bytes; every byte
   after a chunk's first token is scored): total nats / scored bytes / ln 2.
   Under noise: the same chunks with --noise of their characters changed
   (half case flips, half typos: a random letter substituted, the
   character deleted or swapped with the next; a fixed seed), scored the
   same way against the noisy text.
4. Decoding bytes/s at batch 1 and 8: the same 64-byte prompts (the BPE
   model's are their tokens), --new-bytes bytes for the HAT and the number
   of tokens that make as many bytes for the BPE model, sampled at
   --temperature with fixed seeds (greedy decoding of models this small
   falls into runs of spaces, which a HAT reads as one long word: its
   backbone would hardly run); bytes/s = output bytes / wall time, the
   median of --repeats calls (compilation excluded). The HAT's words per
   output byte (backbone steps) are recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench import summaries
from bench.block_transformer import SCHEDULE, models, prepare_data
from bench.speculative import add_timing_args
from jaxspec.generate import generate
from jaxspec.loading import load
from jaxspec.machine_load import timed
from jaxspec.sampling import SamplingConfig
from models.hat_words import split_words
from train.cli import main as train_main
from train.corpus import STDLIB, find_corpus
from train.dataset import open_dataset

HAT_FLAGS = ["--arch", "hat", "--hidden", "128", "--intermediate", "352", "--layers", "4", "--heads", "4",
             "--kv-heads", "2", "--byte-hidden", "64", "--byte-intermediate", "176", "--byte-heads", "4",
             "--byte-kv-heads", "2", "--encoder-layers", "2", "--decoder-layers", "2", "--sliding-window", "256",
             "--max-positions", "4096"]


def byte_data(runs: Path, bpe_data: Path) -> Path:
    """Byte rows holding as much text as the BPE rows: 256 tokens x the training split's bytes per token."""
    data = runs / "bytes"
    if not (data / "dataset.json").exists():
        corpus = find_corpus(STDLIB, "*.py", 0.03)
        per_token = sum(f.stat().st_size for f in corpus.train_files) / open_dataset(bpe_data).meta["splits"]["train"]["tokens"]
        seq = int(round(256 * per_token))
        train_main(["data", "--bytes", "--seq-len", str(seq), "--out", str(data)])
    return data


def train(data: Path, run: Path, flags: list[str], steps: int) -> Path:
    print(f"[train] {run.name}: {steps} steps", file=sys.stderr, flush=True)
    rc = train_main(["lm", "--data", str(data), "--out", str(run), *flags, *SCHEDULE, "--steps", str(steps),
                     "--warmup", str(min(30, steps // 10))])
    if rc != 0:
        raise SystemExit(f"training {run} failed")
    return run / "hf"


def train_flops(lm, positions: dict[str, float]) -> float:
    """6 x matmul params x positions per row, each stack at its own rate (a rough but like-for-like count)."""
    c = lm.model.config

    def stack(s):
        q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        return s.num_layers * (s.hidden_size * (2 * q + 2 * kv) + 3 * s.hidden_size * s.intermediate_size)

    if hasattr(c, "backbone"):
        byte_params = stack(c.encoder) + stack(c.decoder) + c.byte_width * (c.vocab_size + c.backbone.hidden_size)
        return 6 * (byte_params * positions["bytes"] + stack(c.backbone) * positions["word_slots"])
    return 6 * (stack(c) + c.hidden_size * c.vocab_size) * positions["tokens"]


def noisy(text: str, rate: float, seed: int) -> str:
    rng = random.Random(seed)
    out, chars, i = [], list(text), 0
    while i < len(chars):
        ch = chars[i]
        if rng.random() < rate:
            kind = rng.choice(("case", "case", "substitute", "delete", "swap"))
            if kind == "case" and ch.isalpha():
                ch = ch.swapcase()
            elif kind == "substitute":
                ch = rng.choice("abcdefghijklmnopqrstuvwxyz")
            elif kind == "delete":
                i += 1
                continue
            elif kind == "swap" and i + 1 < len(chars):
                chars[i], chars[i + 1] = chars[i + 1], chars[i]
                ch = chars[i]
        out.append(ch)
        i += 1
    return "".join(out)


def chunks(count: int, size: int) -> list[str]:
    """Held-out text: the first `size` bytes of the first `count` held-out files long enough, as text."""
    corpus = find_corpus(STDLIB, "*.py", 0.03)
    texts = []
    for f in corpus.eval_files:
        data = f.read_bytes()
        if len(data) >= size:
            texts.append(data[:size].decode("utf-8", "ignore"))
        if len(texts) == count:
            break
    return texts


def bits_per_byte(lm, texts: list[str], batch: int = 8) -> float:
    """Total nats of every unit after each text's first / the bytes they cover / ln 2."""
    nats, covered = 0.0, 0
    fn = jax.jit(lm.model.sequence_logits)
    for start in range(0, len(texts), batch):
        group = texts[start : start + batch]
        ids = [lm.tokenizer.encode(t) for t in group]
        width = max(map(len, ids))
        padded = np.zeros((len(ids), width), np.int32)
        for i, row in enumerate(ids):
            padded[i, : len(row)] = row
        logp = np.asarray(jax.nn.log_softmax(fn(lm.params, jnp.asarray(padded)), axis=-1))
        for i, (row, text) in enumerate(zip(ids, group)):
            nats -= float(logp[i, np.arange(len(row) - 1), row[1:]].sum())
            covered += len(text.encode()) - len(lm.tokenizer.decode(row[:1]).encode())
    return nats / covered / math.log(2)


def output_bytes(lm, ids: list[int]) -> bytes:
    if getattr(lm.model, "byte_level", False):
        return bytes(i for i in ids if i < 256)
    return lm.tokenizer.decode(ids).encode()


def bytes_per_s(lm, prompts: list[list[int]], new: int, args) -> tuple[float, list[bytes]]:
    """(output bytes per second, each row's output) for `new` units per row sampled at args.temperature."""
    out = {}
    sampling = SamplingConfig(temperature=args.temperature)

    def call():
        gens = generate(lm.model, lm.params, prompts, max_new_tokens=new, sampling=sampling, seed=0)
        out["rows"] = [output_bytes(lm, g.output_ids) for g in gens]

    call()  # compile
    tries = [timed(call, max_other_load=args.max_other_load, attempts=3) for _ in range(args.repeats)]
    return sum(map(len, out["rows"])) / statistics.median(t.seconds for t in tries), out["rows"]


def markdown(quality: list[dict], speed: list[dict]) -> str:
    lines = ["| model | parameters | train GFLOP/row | bits/byte clean | bits/byte noisy | noisy / clean |",
             "|---|---|---|---|---|---|"]
    for r in quality:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['train_gflop_per_row']:.2f} | {r['bpb_clean']:.3f} | "
                     f"{r['bpb_noisy']:.3f} | {r['bpb_noisy'] / r['bpb_clean']:.2f}x |")
    lines += ["", "| batch | BPE bytes/s | HAT bytes/s | HAT / BPE | HAT words per byte |", "|---|---|---|---|---|"]
    for r in speed:
        lines.append(f"| {r['batch']} | {r['bpe_bytes_s']:,.0f} | {r['hat_bytes_s']:,.0f} | "
                     f"{r['hat_bytes_s'] / r['bpe_bytes_s']:.2f}x | {r['hat_words_per_byte']:.3f} |")
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    return markdown(summary["quality"], summary["rows"])


def plot(quality: list[dict], speed: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(quality))
    axes[0].bar(x - 0.2, [r["bpb_clean"] for r in quality], 0.4, label="clean")
    axes[0].bar(x + 0.2, [r["bpb_noisy"] for r in quality], 0.4, label="noisy")
    axes[0].set_xticks(x, [r["model"] for r in quality])
    axes[0].set_ylabel("bits per byte (held out)")
    axes[0].set_title("quality at about equal training FLOPs")
    axes[0].legend()
    xs = np.arange(len(speed))
    axes[1].bar(xs - 0.2, [r["bpe_bytes_s"] for r in speed], 0.4, label="BPE")
    axes[1].bar(xs + 0.2, [r["hat_bytes_s"] for r in speed], 0.4, label="HAT")
    axes[1].set_xticks(xs, [f"batch {r['batch']}" for r in speed])
    axes[1].set_ylabel("decoded bytes per second")
    axes[1].set_title("sampled decoding")
    axes[1].legend()
    fig.suptitle("HAT vs BPE decoder, trained here on the Python stdlib, float32, 2 CPU cores")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.hat", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/block"), help="the block bench's runs (BPE data, vanilla model)")
    p.add_argument("--hat-runs", type=Path, default=Path("runs/hat"), help="byte data and the HAT's run (resumable)")
    p.add_argument("--steps", type=int, default=400, help="training steps of each model (16 rows)")
    p.add_argument("--chunks", type=int, default=32, help="held-out chunks scored")
    p.add_argument("--chunk-bytes", type=int, default=1024)
    p.add_argument("--noise", type=float, default=0.05, help="share of characters changed in the noisy chunks")
    p.add_argument("--new-bytes", type=int, default=256)
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of the speed runs")
    add_timing_args(p)
    p.add_argument("--out", type=Path, default=Path("bench/results/hat.json"))
    p.add_argument("--plot", type=Path, default=Path("docs/img/hat.png"))
    args = p.parse_args(argv)

    bpe_data = prepare_data(args.runs)
    data = byte_data(args.hat_runs, bpe_data)
    dirs = {
        "BPE": train(bpe_data, args.runs / "vanilla", models(1, [])["vanilla"], args.steps),
        "HAT": train(data, args.hat_runs / "hat", HAT_FLAGS, args.steps),
    }
    lms = {name: load(path) for name, path in dirs.items()}
    seq = open_dataset(data).seq_len
    from models.hat import TRAIN_BYTES_PER_WORD

    positions = dict(tokens=256, bytes=seq, word_slots=seq // TRAIN_BYTES_PER_WORD)
    clean = chunks(args.chunks, args.chunk_bytes)
    dirty = [noisy(t, args.noise, seed=i) for i, t in enumerate(clean)]
    quality = []
    for name, lm in lms.items():
        row = dict(model=name, params=lm.num_params, train_gflop_per_row=train_flops(lm, positions) / 1e9,
                   bpb_clean=bits_per_byte(lm, clean), bpb_noisy=bits_per_byte(lm, dirty))
        print(f"[quality] {row}", file=sys.stderr, flush=True)
        quality.append(row)
    prompts = [t.encode()[:64].decode("utf-8", "ignore") for t in clean]
    speed = []
    hat_new = args.new_bytes
    for batch in args.batches:
        rows = prompts[:batch]
        hat_s, hat_rows = bytes_per_s(lms["HAT"], [lms["HAT"].tokenizer.encode(t) for t in rows], hat_new, args)
        per_token = positions["bytes"] / positions["tokens"]
        bpe_s, _ = bytes_per_s(lms["BPE"], [lms["BPE"].tokenizer.encode(t) for t in rows], round(hat_new / per_token), args)
        words = sum(len(split_words(r, lms["HAT"].model.config.max_word_bytes)) for r in hat_rows)
        speed.append(dict(batch=batch, new_bytes=hat_new, bpe_bytes_s=bpe_s, hat_bytes_s=hat_s,
                          hat_words_per_byte=words / sum(map(len, hat_rows))))
        print(f"[speed] {speed[-1]}", file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(quality=quality, rows=speed, steps=args.steps), indent=1) + "\n")
    plot(quality, speed, args.plot)
    print(markdown(quality, speed))
    if args.summary:
        summaries.write("hat", "bench.hat", argv, speed, quality=quality, steps=args.steps, noise=args.noise,
                        temperature=args.temperature)


if __name__ == "__main__":
    main()
