"""A thin wrapper over a Hugging Face tokenizer.json (the `tokenizers` library, no transformers)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from jaxspec.errors import CheckpointError


class Tokenizer:
    def __init__(self, path: Path):
        try:
            self._tok = _HFTokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception
            raise CheckpointError(f"{path}: unreadable tokenizer ({e})") from None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)
