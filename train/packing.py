"""Tokenize a corpus and pack it into fixed-length rows stored as numpy memmaps.

Each file becomes <s> text </s> (a byte dataset, for byte-level models such as
HAT: the file's raw bytes, then end of text, id 256; no tokenizer); the files of a split are concatenated in
corpus order and cut into rows of seq_len + 1 tokens (the extra token is the
last position's target); the tail that does not fill a row is dropped. Rows
cross file boundaries, as usual for packed pretraining data.

Layout of a dataset directory (written atomically):
    dataset.json     the sidecar: format, seq_len, dtype, vocab, rows per split, corpus
    train.bin        uint16 (or uint32 for vocabularies over 65536) [rows, seq_len + 1]
    eval.bin         the held-out files, same layout (may have 0 rows)
    tokenizer.json   the tokenizer that produced the ids (absent from a byte dataset)
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer

from jaxspec.atomic import atomic_directory
from models.hat_words import EOS, VOCAB_SIZE
from train.bpe import TOKENIZER_FILE, special_ids
from train.corpus import Corpus, read_text
from train.errors import TrainingError

SIDECAR = "dataset.json"
FORMAT = "jaxspec-tokens"
VERSION = 1
SPLITS = ("train", "eval")
_ENCODE_CHUNK = 64  # files per encode_batch call: parallel, without holding every encoding at once


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def encode_files(tok: Tokenizer, files: Sequence[Path], dtype: np.dtype, bos: int, eos: int) -> np.ndarray:
    """One flat stream: bos ids eos per file, in the given order."""
    pieces = []
    for start in range(0, len(files), _ENCODE_CHUNK):
        chunk = files[start : start + _ENCODE_CHUNK]
        for enc in tok.encode_batch([read_text(f) for f in chunk], add_special_tokens=False):
            pieces.append(np.array([bos, *enc.ids, eos], dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros((0,), dtype)


def byte_stream(files: Sequence[Path], eos: int) -> np.ndarray:
    """One flat stream of uint16: each file's bytes as they are on disk (any encoding), then eos."""
    pieces = [np.append(np.frombuffer(f.read_bytes(), np.uint8).astype(np.uint16), np.uint16(eos)) for f in files]
    return np.concatenate(pieces) if pieces else np.zeros((0,), np.uint16)


def pack_rows(stream: np.ndarray, row_len: int) -> np.ndarray:
    rows = len(stream) // row_len
    return stream[: rows * row_len].reshape(rows, row_len)


def build_dataset(
    corpus: Corpus, tok: Tokenizer | None, tokenizer_file: Path | None, seq_len: int, out_dir: Path
) -> dict:
    """Writes the dataset directory and returns its sidecar; tok None builds a byte dataset."""
    if seq_len < 2:
        raise TrainingError(f"sequence length must be at least 2, got {seq_len}")
    if tok is None:
        vocab_size, (pad, bos, eos) = VOCAB_SIZE, (None, None, EOS)
    else:
        vocab_size, (pad, bos, eos) = tok.get_vocab_size(), special_ids(tok, tokenizer_file)
    dtype = token_dtype(vocab_size)
    row_len = seq_len + 1
    sidecar = {
        "format": FORMAT,
        "version": VERSION,
        "seq_len": seq_len,
        "row_len": row_len,
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "bytes": tok is None,
        "corpus": {"root": str(corpus.root), "python": platform.python_version()},
        "splits": {},
    }
    with atomic_directory(out_dir) as tmp:
        for split, files in zip(SPLITS, (corpus.train_files, corpus.eval_files)):
            stream = byte_stream(files, eos) if tok is None else encode_files(tok, files, dtype, bos, eos)
            rows = pack_rows(stream, row_len)
            if split == "train" and len(rows) == 0:
                raise TrainingError(
                    f"{corpus.root}: the training files hold {len(stream)} tokens, fewer than one row of {row_len}"
                )
            rows.tofile(tmp / f"{split}.bin")
            sidecar["splits"][split] = {
                "file": f"{split}.bin",
                "rows": int(rows.shape[0]),
                "files": len(files),
                "tokens": int(len(stream)),
            }
        if tok is not None:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar
