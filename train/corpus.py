"""Text corpora: which files, in which order, and which of them are held out for evaluation.

The default corpus is the Python standard library's own source, which every
machine with Python has. File order is the sorted relative path, and a file is
held out when a hash of its relative path falls below the eval fraction, so the
split does not depend on the file system's listing order or on which other
files exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sysconfig
from pathlib import Path

from train.errors import TrainingError

STDLIB = "stdlib"


@dataclasses.dataclass(frozen=True)
class Corpus:
    root: Path
    train_files: tuple[Path, ...]
    eval_files: tuple[Path, ...]


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _is_held_out(relative: str, eval_fraction: float) -> bool:
    digest = hashlib.sha256(relative.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def find_corpus(source: str, pattern: str = "*.py", eval_fraction: float = 0.03) -> Corpus:
    """`source` is "stdlib" or a directory; files matching `pattern` below it make the corpus."""
    if not 0.0 <= eval_fraction < 1.0:
        raise TrainingError(f"eval fraction must be in [0, 1), got {eval_fraction}")
    root = stdlib_root() if source == STDLIB else Path(source)
    if not root.is_dir():
        raise TrainingError(f"{root}: corpus directory does not exist")
    files = []
    for path in root.rglob(pattern):
        relative = path.relative_to(root)
        # The stdlib folder also holds installed packages; they are not the stdlib.
        if source == STDLIB and "site-packages" in relative.parts:
            continue
        if path.is_file():
            files.append(relative.as_posix())
    files.sort()
    if not files:
        raise TrainingError(f"{root}: no files matching {pattern!r}")
    train = tuple(root / f for f in files if not _is_held_out(f, eval_fraction))
    held = tuple(root / f for f in files if _is_held_out(f, eval_fraction))
    if not train:
        raise TrainingError(f"{root}: every file was held out for evaluation; lower the eval fraction")
    return Corpus(root, train, held)


def read_text(path: Path) -> str:
    # A few stdlib test files are deliberately not valid UTF-8; keep their bytes readable rather than skip them.
    return path.read_bytes().decode("utf-8", errors="replace")
