"""Token recycling's successor table on disk (--successor-table FILE.npz): what lets later calls start hot.

The file holds `table` [V, k] int32 (the target's top-k successors of each
token, as last seen) and `known` [V] int32 (how many of each row's ranks are
real). It is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxspec.atomic import atomic_file
from jaxspec.errors import CheckpointError


def load_successors(path) -> tuple[jnp.ndarray, jnp.ndarray] | None:
    """(table, known) from `path`, or None when it does not exist yet (the first call starts cold)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            table, known = data["table"], data["known"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a successor table ({e})") from None
    if table.ndim != 2 or known.shape != table.shape[:1]:
        raise CheckpointError(f"{path}: not a successor table (table {table.shape}, known {known.shape})")
    return jnp.asarray(table, jnp.int32), jnp.asarray(known, jnp.int32)


def save_successors(path, successors) -> None:
    table, known = (np.asarray(x, np.int32) for x in successors)
    with atomic_file(Path(path), "wb") as f:
        np.savez(f, table=table, known=known)
