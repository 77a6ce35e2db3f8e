"""GGUF files in: metadata → config.json, tensors dequantized → params, tokenizer.ggml.* → tokenizer.json.

A loaded GGUF is an ordinary jaxspec model; `jaxspec convert MODEL.gguf OUT`
writes it as a Hugging Face directory (or a jaxspec checkpoint) that
transformers and jaxspec both load.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxspec import hf_io
from jaxspec.errors import UnsupportedModelError
from jaxspec.gguf.architectures import family, hf_config, undo_conventions
from jaxspec.gguf.reader import GGUFFile, is_gguf, read_gguf
from jaxspec.gguf.tokenizer import build_tokenizer, tokenizer_config
from models import ModelConfigError, build_model

# Tensors a GGUF may hold that carry no weights of ours (llama.cpp's precomputed RoPE divisors,
# already turned into the config's rope_scaling).
_DERIVED = frozenset({"rope_freqs.weight"})

__all__ = ["is_gguf", "load_gguf", "open_gguf", "read_gguf"]


def _gguf_names(f: GGUFFile, model, abstract) -> dict[str, str]:
    """Hugging Face tensor name → GGUF tensor name, for every tensor the model expects."""
    import gguf

    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == f.architecture)
    name_map = gguf.get_tensor_name_map(arch, model.config.num_layers)
    out = {}
    for path in hf_io.flat_paths(abstract):
        hf_name = model.hf_tensor_name(path)
        base, suffix = hf_name.rsplit(".", 1)
        mapped = name_map.get_name(base)
        if mapped is None:
            raise UnsupportedModelError(f"{f.path}: no GGUF name for tensor {hf_name}")
        out[hf_name] = f"{mapped}.{suffix}"
    return out


def _reader(f: GGUFFile, cfg: dict, model):
    """(abstract params, the Hugging Face names present, read(names) yielding dequantized tensors one at a time)."""
    fam = family(f)
    abstract = jax.eval_shape(model.init_params, jax.random.PRNGKey(0))
    names = _gguf_names(f, model, abstract)
    wanted = set(names.values())
    hf_io.check_tensor_names(f.path, missing=wanted - set(f.tensors), extra=set(f.tensors) - wanted - _DERIVED)

    def read(hf_names):
        for hf_name in hf_names:
            g = names[hf_name]
            yield hf_name, undo_conventions(fam, cfg, g, f.tensors[g].dequantize())

    return abstract, set(names), read


def _side_files(f: GGUFFile, cfg: dict) -> dict[str, bytes]:
    """tokenizer.json, tokenizer_config.json and generation_config.json, as a converted directory holds them."""
    tok = build_tokenizer(f.metadata, str(f.path))
    generation = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if cfg.get(k) is not None}
    dump = lambda obj: (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
    return {
        "tokenizer.json": tok.to_str().encode(),
        "tokenizer_config.json": dump(tokenizer_config(f.metadata)),
        "generation_config.json": dump(generation),
    }


def open_gguf(path: Path, dtype: str = "float32"):
    """(config.json dict, model object, side files, abstract params, names present, read) of a GGUF file:
    what load_gguf places and `jaxspec convert` streams (hf_io.checked_tensors)."""
    f = read_gguf(path)
    cfg = hf_config(f)
    try:
        model = build_model(cfg, dtype)
    except ModelConfigError as e:
        raise UnsupportedModelError(f"{path}: {e}") from None
    return cfg, model, _side_files(f, cfg), *_reader(f, cfg, model)


def load_gguf(path: Path, dtype: str, shardings_for=lambda model, abstract: None) -> tuple[dict, object, dict, dict[str, bytes]]:
    """(config.json dict, model object, params in `dtype`, side files) of a GGUF file.

    Quantized tensors are dequantized with the `gguf` package's own dequantizers, one at a time;
    `shardings_for(model, abstract_params)` gives the shardings each is placed into as soon as it is
    dequantized (None: the default device)."""
    cfg, model, side, abstract, present, read = open_gguf(path, dtype)
    params = hf_io.place_tensors(str(path), model, abstract, present, read, jnp.dtype(dtype), shardings_for(model, abstract))
    return cfg, model, params, side
