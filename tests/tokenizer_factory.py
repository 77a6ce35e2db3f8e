"""A tiny byte-level BPE tokenizer.json, trained in well under a second, for CLI tests."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2, matching the test configs
_TEXT = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i)\n",
    "the quick brown fox jumps over the lazy dog",
    "import os\nimport sys\n",
] * 20


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=[],
        show_progress=False,
    )
    tok.train_from_iterator(_TEXT, trainer)
    tok.save(str(Path(directory) / "tokenizer.json"))
