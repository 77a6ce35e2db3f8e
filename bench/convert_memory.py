"""Peak host memory of `jaxspec convert` on Gemma 3 270M, streamed tensor by tensor, against loading whole.

Each case runs in a fresh process, which reports its peak resident memory (ru_maxrss) after importing jax
and jaxspec and after converting; the difference is what converting cost it. The sources are the float32
Hugging Face directory (1.07 GB; its largest tensor, the embedding, 671 MB) and the Q4_K_M GGUF file it was
converted from. "load whole, then save" is what `jaxspec convert` did before it streamed.

    python -m bench.convert_memory --summary
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import summaries
from bench.load_memory import MIB, peak_rss

CASES = (
    # (name, source: "hf" or "gguf", how: "convert" or "load-save", to)
    ("convert --to hf (streamed)", "hf", "convert", "hf"),
    ("convert --to jaxspec", "hf", "convert", "jaxspec"),
    ("load whole, then save --to hf", "hf", "load-save", "hf"),
    ("convert GGUF --to hf (streamed, dequantized one at a time)", "gguf", "convert", "hf"),
)


def worker(src: str, how: str, to: str, out: str) -> None:
    """One case: prints {"before": bytes, "after": bytes} as JSON."""
    import jax

    from jaxspec import load, save
    from jaxspec.convert import convert

    jax.devices()
    before = peak_rss()
    if how == "convert":
        convert(src, out, to=to)
    else:
        save(load(src, dtype=None), out, to=to)
    print(json.dumps(dict(before=before, after=peak_rss())))


def markdown(rows: list[dict]) -> str:
    lines = ["| case | peak before (MiB) | peak after (MiB) | converting added (MiB) |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['before'] / MIB:.0f} | {r['after'] / MIB:.0f} | "
                     f"{(r['after'] - r['before']) / MIB:.0f} |")
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    return markdown(summary["rows"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.convert_memory", description=__doc__.splitlines()[0])
    p.add_argument("--summary", action="store_true", help="write the rows to bench/summaries/ (committed)")
    p.add_argument("--worker", nargs=4, metavar=("SRC", "HOW", "TO", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return
    from jaxspec import reference_model

    sources = {"hf": str(reference_model.converted_dir(progress=print)), "gguf": str(reference_model.gguf_path())}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (case, source, how, to) in enumerate(CASES):
            out = subprocess.run(
                [sys.executable, "-m", "bench.convert_memory", "--worker", sources[source], how, to, str(Path(tmp) / str(i))],
                capture_output=True, text=True, check=True,
            ).stdout
            rows.append(dict(case=case, **json.loads(out.strip().splitlines()[-1])))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print(markdown(rows))
    if args.summary:
        summaries.write("convert_memory", "bench.convert_memory", argv, rows)


if __name__ == "__main__":
    main()
