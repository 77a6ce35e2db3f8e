"""Open a GGUF file: its metadata as plain Python values and its tensors, dequantized on request.

The `gguf` package (llama.cpp's own reader, numpy only) parses the file; this
module turns every way a file can be broken into a typed jaxspec error with
one line of text.
"""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

import numpy as np

from jaxspec.errors import CheckpointError, UnsupportedModelError

GGUF_MAGIC = b"GGUF"


def is_gguf(path: str | Path) -> bool:
    """True for a path named *.gguf (so that a missing or broken one is reported as such) or a file
    that starts with the GGUF magic."""
    path = Path(path)
    if path.suffix == ".gguf":
        return not path.is_dir()
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC


@dataclasses.dataclass
class GGUFTensor:
    name: str
    type_name: str  # "F32", "Q8_0", "Q4_K", ...
    shape: tuple[int, ...]  # numpy order (rows last-dimension-first reversed from ggml's ne)
    _raw: Any

    def dequantize(self) -> np.ndarray:
        """The tensor as float32 in numpy (Hugging Face) order."""
        import gguf

        qtype = self._raw.tensor_type
        if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16) or (
            qtype in gguf.quants._type_traits
        ):
            try:
                out = gguf.quants.dequantize(self._raw.data, qtype)
            except NotImplementedError:
                raise UnsupportedModelError(f"tensor {self.name}: GGUF type {self.type_name} cannot be dequantized") from None
            return np.asarray(out, dtype=np.float32).reshape(self.shape)
        raise UnsupportedModelError(f"tensor {self.name}: GGUF type {self.type_name} is not supported")


@dataclasses.dataclass
class GGUFFile:
    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise CheckpointError(f"{self.path}: no general.architecture in the GGUF metadata")
        return arch

    def get(self, key: str, default: Any = None) -> Any:
        """An architecture-scoped key: get("block_count") reads "<arch>.block_count"."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise CheckpointError(f"{self.path}: GGUF metadata lacks {self.architecture}.{key}")
        return value


def _field_value(field) -> Any:
    """A metadata field as str, int, float, bool or a list of those."""
    import gguf

    kind = field.types[0] if field.types else None
    if kind == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        if not field.data:
            return []
        # Numeric arrays: one part per element; concatenating is much faster than contents().
        return np.concatenate([field.parts[i] for i in field.data]).tolist()
    if kind == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8", errors="replace")
    return field.parts[-1].tolist()[0]


def read_gguf(path: str | Path) -> GGUFFile:
    """Parses the header, metadata and tensor table (tensor data stays memory-mapped)."""
    import gguf

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise CheckpointError(f"{path}: not a GGUF file (bad magic)")
    # The reader makes a few objects per array element (262,144 tokens in Gemma 3's vocabulary); the
    # garbage collector rescanning them all along takes a third of its time.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, MemoryError) as e:
        raise CheckpointError(f"{path}: truncated or corrupted GGUF file ({e})") from None
    finally:
        if gc_was_enabled:
            gc.enable()
    size = path.stat().st_size
    tensors = {}
    for t in reader.tensors:
        if t.data_offset + int(t.n_bytes) > size or t.data.nbytes != int(t.n_bytes):
            raise CheckpointError(f"{path}: truncated GGUF file (tensor {t.name} runs past the end)")
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        tensors[t.name] = GGUFTensor(t.name, t.tensor_type.name, shape, t)
    metadata = {name: _field_value(field) for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    return GGUFFile(path, metadata, tensors)
