"""GGUF metadata → a Hugging Face config.json, and the tensor conventions llama.cpp's converter applies.

A GGUF file carries no config.json: the metadata under `<arch>.*` is the
config. Each supported architecture maps to one of our decoder-only families;
options the file cannot express take the values of the released checkpoints
(for example Gemma 3's local RoPE base of 10,000), and each is named below
with its source. Everything here is documented in docs/gguf.md.

Conventions undone on load (llama.cpp, convert_hf_to_gguf.py):
- `LlamaModel.modify_tensors` permutes the rows of attn_q and attn_k per head
  (rotate-half pairs interleaved, for ggml's RoPE): reversed here for llama.
- `GemmaModel`/`Gemma2Model`/`Gemma3Model.modify_tensors` add 1 to every
  `*norm.weight` (ggml's RMSNorm multiplies by w, Gemma's by 1 + w): 1 is
  subtracted here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from jaxspec.errors import CheckpointError, UnsupportedModelError
from jaxspec.gguf.reader import GGUFFile


@dataclasses.dataclass(frozen=True)
class Family:
    hf_architecture: str
    model_type: str
    permute_qk: bool = False  # llama.cpp interleaved q/k rows for its RoPE
    norm_plus_one: bool = False  # llama.cpp stored Gemma's norm weights as 1 + w
    extra: Callable[[GGUFFile, dict], dict] | None = None  # family-specific config keys


def _gemma2_extra(f: GGUFFile, cfg: dict) -> dict:
    return {
        "attn_logit_softcapping": _float(f.get("attn_logit_softcapping")),
        "final_logit_softcapping": _float(f.get("final_logit_softcapping")),
        "sliding_window": f.get("attention.sliding_window"),
        "query_pre_attn_scalar": _query_pre_attn_scalar(cfg, big_layers=46),
    }


def _gemma3_extra(f: GGUFFile, cfg: dict) -> dict:
    return {
        "sliding_window": f.get("attention.sliding_window"),
        # Not in the file. Gemma 3's released configs all use a local base of 10,000 and
        # a 5 local : 1 global layer pattern; llama.cpp hard-codes the same (llama-model.cpp).
        "rope_local_base_freq": 10000.0,
        "sliding_window_pattern": 6,
        "query_pre_attn_scalar": _query_pre_attn_scalar(cfg, big_layers=62),
        "final_logit_softcapping": _float(f.get("final_logit_softcapping")),
        "attn_logit_softcapping": _float(f.get("attn_logit_softcapping")),
    }


def _query_pre_attn_scalar(cfg: dict, big_layers: int) -> float:
    """Gemma 2/3 scale queries by head_dim^-0.5, except the 27B models (46 / 62 layers), which use
    (hidden / heads)^-0.5. The file does not say; llama.cpp decides by model size the same way."""
    if cfg["num_hidden_layers"] == big_layers:
        return cfg["hidden_size"] // cfg["num_attention_heads"]
    return cfg["head_dim"]


# general.architecture → our family. llama.cpp writes Mistral 7B as `llama` (without its sliding
# window, which it does not run either), so such files load as Llama.
FAMILIES = {
    "llama": Family("LlamaForCausalLM", "llama", permute_qk=True),
    "qwen2": Family("Qwen2ForCausalLM", "qwen2"),
    "qwen3": Family("Qwen3ForCausalLM", "qwen3"),
    "gemma": Family("GemmaForCausalLM", "gemma", norm_plus_one=True),
    "gemma2": Family("Gemma2ForCausalLM", "gemma2", norm_plus_one=True, extra=_gemma2_extra),
    "gemma3": Family("Gemma3ForCausalLM", "gemma3_text", norm_plus_one=True, extra=_gemma3_extra),
}


def family(f: GGUFFile) -> Family:
    arch = f.architecture
    if arch not in FAMILIES:
        raise UnsupportedModelError(
            f"{f.path}: GGUF architecture {arch!r} is not supported (supported: {', '.join(sorted(FAMILIES))})"
        )
    return FAMILIES[arch]


def _float(value) -> float | None:
    """A float32 metadata value as the short decimal it was written from (1e-06, not 9.99999997e-07)."""
    return None if value is None else float(str(np.float32(value)))


def _single(f: GGUFFile, key: str) -> int:
    """A per-model integer that some files store per layer (all equal in the families we run)."""
    value = f.require(key)
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise UnsupportedModelError(f"{f.path}: {f.architecture}.{key} differs between layers ({sorted(set(value))})")
        value = value[0]
    return int(value)


def _rope_scaling(f: GGUFFile) -> dict | None:
    kind = f.get("rope.scaling.type", "none")
    if kind in ("none", None):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": _float(f.require("rope.scaling.factor"))}
    raise UnsupportedModelError(f"{f.path}: RoPE scaling {kind!r} is not supported (supported: none, linear)")


def _llama3_rope(f: GGUFFile, base: dict) -> dict | None:
    """llama.cpp stores Llama 3's RoPE scaling as a tensor of per-frequency divisors (rope_freqs), not as
    metadata. Recover the llama3 parameters from it, and accept them only if they reproduce every divisor.

    Divisors are `factor` for long wavelengths, 1 for short ones, and 1 / ((1 - s) / factor + s) between,
    with s = (old_len / wavelength - low) / (high - low): linear in 1 / wavelength, so two in-between
    divisors give old_len / (high - low) and low / (high - low); low = 1 (Meta's value) fixes the rest.
    With fewer, Meta's released values (low 1, high 4, old_len 8192) are tried.
    """
    from models.config import RopeConfig
    from models.rope import inverse_frequencies

    t = f.tensors.get("rope_freqs.weight")
    if t is None:
        return None
    divisors = t.dequantize().astype(np.float64).ravel()
    theta, head_dim = base["rope_theta"], base["head_dim"]
    inv_freq = inverse_frequencies(RopeConfig(theta=theta), head_dim).astype(np.float64)
    factor = float(divisors.max())
    params = dict(factor=factor, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
    s = (1 / divisors - 1 / factor) / (1 - 1 / factor) if factor > 1 else np.zeros_like(divisors)
    between = (s > 1e-6) & (s < 1 - 1e-6)
    if between.sum() >= 2 and divisors.shape == inv_freq.shape:
        inv_wavelen = inv_freq[between] / (2 * np.pi)
        a, b = np.linalg.lstsq(np.stack([inv_wavelen, -np.ones_like(inv_wavelen)], 1), s[between], rcond=None)[0]
        params.update(high_freq_factor=float(1 + 1 / b), original_max_position_embeddings=int(round(a / b)))
    scaled = inverse_frequencies(RopeConfig(theta=theta, kind="llama3", **params), head_dim).astype(np.float64)
    if divisors.shape != inv_freq.shape or not np.allclose(inv_freq / scaled, divisors, rtol=1e-4):
        raise UnsupportedModelError(f"{f.path}: rope_freqs.weight does not match llama3 RoPE scaling; not supported")
    return {"rope_type": "llama3", **params}


def hf_config(f: GGUFFile) -> dict:
    """The Hugging Face config.json that describes the same model as the file's metadata."""
    fam = family(f)
    if "token_embd.weight" not in f.tensors:
        raise CheckpointError(f"{f.path}: missing tensor token_embd.weight")
    heads = _single(f, "attention.head_count")
    hidden = int(f.require("embedding_length"))
    head_dim = int(f.get("attention.key_length") or hidden // heads)
    rot = f.get("rope.dimension_count")
    if rot is not None and int(rot) != head_dim:
        raise UnsupportedModelError(f"{f.path}: partial rotary embeddings ({rot} of {head_dim} dims) are not supported")
    meta = f.metadata
    cfg: dict[str, Any] = {
        "architectures": [fam.hf_architecture],
        "model_type": fam.model_type,
        "vocab_size": int(f.tensors["token_embd.weight"].shape[0]),
        "hidden_size": hidden,
        "intermediate_size": _single(f, "feed_forward_length"),
        "num_hidden_layers": int(f.require("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": _single(f, "attention.head_count_kv") if f.get("attention.head_count_kv") else heads,
        "head_dim": head_dim,
        "rms_norm_eps": _float(f.require("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(f.get("context_length", 2048)),
        "rope_theta": _float(f.get("rope.freq_base", 10000.0)),
        "rope_scaling": _rope_scaling(f),
        "tie_word_embeddings": "output.weight" not in f.tensors,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    }
    if fam.model_type == "llama":
        cfg["attention_bias"] = "blk.0.attn_q.bias" in f.tensors
        cfg["rope_scaling"] = _llama3_rope(f, cfg) or cfg["rope_scaling"]
    if fam.extra is not None:
        cfg.update(fam.extra(f, cfg))
    return cfg


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's permute(): rows (head, pair, half) back to Hugging Face's (head, half, pair)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def undo_conventions(fam: Family, cfg: dict, gguf_name: str, w: np.ndarray) -> np.ndarray:
    """The tensor as the Hugging Face checkpoint held it, from llama.cpp's stored form."""
    if fam.permute_qk and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
        n_head = cfg["num_attention_heads"] if ".attn_q." in gguf_name else cfg["num_key_value_heads"]
        w = _unpermute(w, n_head)
    if fam.norm_plus_one and gguf_name.endswith("norm.weight"):
        w = w - np.float32(1.0)
    return w
