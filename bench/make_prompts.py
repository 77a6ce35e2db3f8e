"""Writes the benchmark prompt sets in bench/prompts/ from held-out files of the demo corpus.

    python -m bench.make_prompts

- code.jsonl: the start of a function from a held-out stdlib file (the demo
  models never trained on these files), cut at a line boundary.
- quote.jsonl: the same function, then a comment announcing a copy of it and
  its first line again — a prompt whose continuation quotes its context, the
  case prompt lookup is built for.
The prompts are committed, so a benchmark run needs neither this script nor
the same Python version.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from jaxspec.tokenizer import Tokenizer
from train.corpus import find_corpus, read_text

OUT = Path(__file__).parent / "prompts"


def functions(text: str, max_lines: int) -> list[str]:
    """Top-level or method definitions with their body, at most max_lines long."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        match = re.match(r"(\s*)def \w+\(", line)
        if not match:
            continue
        indent = len(match.group(1))
        body = [line]
        for nxt in lines[i + 1 : i + max_lines]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        if len(body) >= 6:
            found.append("\n".join(body) + "\n")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="demo/target/tokenizer.json")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=110, help="prompt budget; the demo models saw 256-token windows")
    args = parser.parse_args()
    tok = Tokenizer.from_file(Path(args.tokenizer))
    code, quote = [], []
    for path in find_corpus("stdlib").eval_files:
        for fn in functions(read_text(path), 40):
            if len(tok.encode(fn)) > args.max_tokens // 2 or len(code) >= args.count:
                continue
            lines = fn.splitlines()
            head = "\n".join(lines[: max(3, len(lines) // 2)]) + "\n"
            code.append({"prompt": head, "source": path.name})
            quote.append({"prompt": f"{fn}\n\n# The same function again, unchanged:\n{lines[0]}\n", "source": path.name})
            break  # one function per file, for variety
    OUT.mkdir(exist_ok=True)
    for name, rows in (("code", code), ("quote", quote)):
        with open(OUT / f"{name}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"wrote {len(rows)} prompts to {OUT / name}.jsonl")


if __name__ == "__main__":
    main()
