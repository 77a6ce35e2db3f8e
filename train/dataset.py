"""Open a packed dataset and draw batches from it deterministically and resumably.

The batch stream's whole state is one int, `position`: the number of rows
drawn so far. Row p of the stream is row perm_e[p mod N] of the split, where
perm_e is a permutation seeded by (seed, e) for epoch e = p // N. So a run that
saves `position` with its checkpoint draws exactly the same batches after a
restart, and the batch size may even change between runs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from train.bpe import TOKENIZER_FILE
from train.errors import TrainingError
from train.packing import FORMAT, SIDECAR, VERSION


@dataclasses.dataclass(frozen=True)
class Dataset:
    directory: Path
    meta: dict
    train: np.ndarray  # memmap [rows, seq_len + 1]
    eval: np.ndarray

    @property
    def seq_len(self) -> int:
        return self.meta["seq_len"]

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def special_ids(self) -> tuple[int, int, int]:
        """(bos, eos, pad) the rows were packed with (datasets older than the pad field pad with id 0)."""
        return self.meta["bos_token_id"], self.meta["eos_token_id"], self.meta.get("pad_token_id", 0)

    @property
    def is_bytes(self) -> bool:
        """Raw bytes and end of text (256), for byte-level models: no tokenizer."""
        return bool(self.meta.get("bytes", False))

    @property
    def tokenizer_file(self) -> Path | None:
        return None if self.is_bytes else self.directory / TOKENIZER_FILE


def _read_sidecar(directory: Path) -> dict:
    if not directory.is_dir():
        raise TrainingError(f"{directory}: dataset directory does not exist (build it with `jaxspec-train data`)")
    path = directory / SIDECAR
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise TrainingError(f"{path}: missing dataset sidecar (build it with `jaxspec-train data`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TrainingError(f"{path}: corrupted dataset sidecar ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise TrainingError(f"{path}: not a {FORMAT} v{VERSION} sidecar")
    return meta


def _open_split(directory: Path, meta: dict, split: str) -> np.ndarray:
    info = meta["splits"][split]
    path = directory / info["file"]
    rows, row_len, dtype = info["rows"], meta["row_len"], np.dtype(meta["dtype"])
    if not path.exists():
        raise TrainingError(f"{path}: missing data file")
    want = rows * row_len * dtype.itemsize
    if path.stat().st_size != want:
        raise TrainingError(f"{path}: expected {want} bytes ({rows} rows), found {path.stat().st_size}")
    if rows == 0:
        return np.zeros((0, row_len), dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(rows, row_len))


def open_dataset(directory: str | Path) -> Dataset:
    directory = Path(directory)
    meta = _read_sidecar(directory)
    train = _open_split(directory, meta, "train")
    if len(train) == 0:
        raise TrainingError(f"{directory / meta['splits']['train']['file']}: empty training data")
    if not meta.get("bytes", False) and not (directory / TOKENIZER_FILE).exists():
        raise TrainingError(f"{directory / TOKENIZER_FILE}: missing tokenizer file")
    return Dataset(directory, meta, train, _open_split(directory, meta, "eval"))


class BatchStream:
    """Shuffled rows of one split, epoch after epoch; `position` is all the state there is."""

    def __init__(self, rows: np.ndarray, batch_rows: int, seed: int, position: int = 0):
        self.rows = rows
        self.batch_rows = batch_rows
        self.seed = seed
        self.position = position
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))}
        return self._perms[epoch]

    def next_index(self) -> np.ndarray:
        """The split's row numbers of the next batch, advancing the stream. Every process of a multi-process
        run draws the same numbers and reads only the rows its devices hold."""
        n = len(self.rows)
        stream_pos = self.position + np.arange(self.batch_rows)
        epochs, offsets = np.divmod(stream_pos, n)
        index = np.empty(self.batch_rows, np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            index[sel] = self._perm(int(e))[offsets[sel]]
        self.position += self.batch_rows
        return index

    def next(self) -> np.ndarray:
        return np.asarray(self.rows[self.next_index()])


def eval_batches(rows: np.ndarray, batch_rows: int, max_batches: int) -> list[np.ndarray]:
    """The first whole batches of the held-out split, in order: the same rows at every evaluation."""
    count = min(len(rows) // batch_rows, max_batches)
    return [np.asarray(rows[i * batch_rows : (i + 1) * batch_rows]) for i in range(count)]
