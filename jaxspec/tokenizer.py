"""A thin wrapper over a Hugging Face tokenizer.json (the `tokenizers` library, no transformers), and the
byte "tokenizer" of byte-level models."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from jaxspec.errors import CheckpointError, InputError


class Tokenizer:
    def __init__(self, tok: _HFTokenizer):
        self._tok = tok

    @classmethod
    def from_file(cls, path: Path) -> Tokenizer:
        return cls.from_json(Path(path).read_bytes(), str(path))

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> Tokenizer:
        """From the content of a tokenizer.json; `where` names its source in errors."""
        try:
            return cls(_HFTokenizer.from_str(text.decode() if isinstance(text, bytes) else text))
        except Exception as e:  # the Rust side raises a bare Exception
            raise CheckpointError(f"{where}: unreadable tokenizer ({e})") from None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids; add_special_tokens=False leaves out what the post-processor adds (a BOS), for text
        that carries its own, such as a rendered chat template."""
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


class ByteTokenizer:
    """A byte-level model's "tokenizer" (models/hat.py): ids are the text's UTF-8 bytes, and 256 ends a text.

    Text that is not valid UTF-8 is taken as bytes: a command-line argument holding such bytes reaches
    Python with each undecodable byte as a lone surrogate (PEP 383), which `encode` turns back into that
    byte. Decoding shows bytes that do not form UTF-8 as U+FFFD; the ids stay exact."""

    def __init__(self, vocab_size: int, specials: frozenset[int]):
        self._vocab_size = vocab_size
        self._specials = specials

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        try:
            return list(text.encode("utf-8", "surrogateescape"))
        except UnicodeEncodeError as e:
            raise InputError(f"text holds {text[e.start]!r}, which is neither a character nor an escaped byte") from None

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i not in self._specials and 0 <= i < 256).decode("utf-8", "replace")
