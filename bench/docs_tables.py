"""Rebuilds the tables of docs/benchmarks.md from the committed summaries in bench/summaries/.

    python -m bench.docs_tables          # rewrite the tables in place
    python -m bench.docs_tables --check  # exit 1 if a table differs from its summary

A table in the docs is the block between `<!-- table: NAME -->` and
`<!-- end table -->`; it is rendered by the `summary_table` function of the
bench module that wrote bench/summaries/NAME.json, followed by the command
that measured it, the date and the machine.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from bench import summaries

DOCS = Path(__file__).parent.parent / "docs" / "benchmarks.md"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def render(name: str) -> str:
    summary = summaries.read(name)
    module = importlib.import_module(summary["command"].split()[2])
    m = summary["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    provenance = (
        f"Measured by `{summary['command']}` on {summary['date']} "
        f"({m['cpu_cores']} cores, {m['processor']}; {versions}); rows in bench/summaries/{name}.json."
    )
    return f"{module.summary_table(summary)}\n\n{provenance}\n"


def rebuild(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.docs_tables", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    args = p.parse_args(argv)
    text = DOCS.read_text()
    new = rebuild(text)
    if args.check:
        if new != text:
            sys.exit(f"{DOCS} has tables that differ from bench/summaries/: run python -m bench.docs_tables")
        return
    DOCS.write_text(new)


if __name__ == "__main__":
    main()
