"""Small GGUF files for tests, written with llama.cpp's own `gguf.GGUFWriter`.

`add_tokenizer_metadata(writer, kind)` puts a complete tokenizer.ggml.* description
into a writer: a vocabulary trained in well under a second on a fixed corpus (so
it is realistic yet deterministic), its scores or merges, token types and the
special token ids, shaped the way llama.cpp's converters write them.

`write_gguf_model(hf_model, family, path, qtype)` writes a transformers model the
way llama.cpp's convert_hf_to_gguf.py does: metadata under the architecture's
keys, tensors renamed by gguf's own name map, Llama's q/k rows permuted, Gemma's
norm weights stored as 1 + w, Llama 3 RoPE scaling as a rope_freqs tensor.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

# llama.cpp token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away!",
    "def tokenize(text: str) -> list[int]:\n    return [ord(c) for c in text]\n",
    "for i in range(10):\n\tprint(i, i * i)  # squares\n",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1e10 0x1F",
    "It's, they're, we've, I'm, you'll, he'd -- contractions IN CAPS: IT'S, WE'VE.",
    "Unicode: café, naïve, Zürich, São Paulo, Ελληνικά, русский, 中文字符, 日本語のテキスト, 한국어.",
    "Emoji: 😀 🎉 👍🏽 — dashes – and “quotes” … ellipsis",
    "    indented line\n\n\nthree newlines\r\nwindows line end   trailing spaces   ",
    "<html><body><p>Hello, world!</p></body></html>",
    "SELECT name, count(*) FROM users WHERE age >= 18 GROUP BY name;",
]

SENTENCEPIECE_SPECIALS = [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)]
SENTENCEPIECE_MARKED = [("<start_of_turn>", CONTROL), ("<end_of_turn>", CONTROL), ("<think>", USER_DEFINED)]
BYTE_LEVEL_MARKED = [
    ("<|endoftext|>", CONTROL),
    ("<|im_start|>", CONTROL),
    ("<|im_end|>", CONTROL),
    # Spelled outside the byte alphabet: llama.cpp marks such tokens control, transformers skips them.
    ("<｜begin▁of▁sentence｜>", CONTROL),
    ("<think>", USER_DEFINED),
    ("</think>", USER_DEFINED),
]


def add_tokenizer_metadata(
    writer: gguf.GGUFWriter,
    kind: str,
    *,
    vocab_size: int = 600,
    pre: str = "qwen2",
    add_bos: bool | None = True,
    add_eos: bool | None = None,
    chat_template: str | None = None,
) -> list[str]:
    """Writes a tokenizer of `kind` ("llama": sentencepiece BPE with scores and byte-fallback
    tokens, no merges; "gpt2": byte-level BPE with merges and `pre`) and returns its tokens.

    `add_bos`/`add_eos` None leaves the flag out of the file, as older converters did.
    """
    if kind == "llama":
        tokens, types, merges = _sentencepiece_vocab(vocab_size)
        scores = [0.0 if kind_ != NORMAL else -float(i) for i, kind_ in enumerate(types)]
        writer.add_tokenizer_model("llama")
        writer.add_token_scores(scores)
        writer.add_bos_token_id(tokens.index("<s>"))
        writer.add_eos_token_id(tokens.index("</s>"))
        writer.add_unk_token_id(tokens.index("<unk>"))
        writer.add_add_space_prefix(True)
    elif kind == "gpt2":
        tokens, types, merges = _byte_level_vocab(vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(tokens.index("<|endoftext|>"))
        writer.add_eos_token_id(tokens.index("<|im_end|>"))
        writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    if add_eos is not None:
        writer.add_add_eos_token(add_eos)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    return tokens


def _sentencepiece_vocab(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Specials, byte-fallback tokens <0x00>..<0xFF>, then pieces spelled with "▁" in training order."""
    pre = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    pieces, _ = _train(pre, vocab_size, initial_alphabet=[])
    head = SENTENCEPIECE_SPECIALS + SENTENCEPIECE_MARKED + [(f"<0x{b:02X}>", BYTE) for b in range(256)]
    taken = {t for t, _ in head}
    entries = head + [(p, NORMAL) for p in pieces if p not in taken]
    return [t for t, _ in entries], [k for _, k in entries], []


def _byte_level_vocab(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Trained byte-level tokens and merges, then the marked tokens appended as llama.cpp lists added tokens."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    pieces, merges = _train(pre, vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    entries = [(p, NORMAL) for p in pieces] + BYTE_LEVEL_MARKED
    return [t for t, _ in entries], [k for _, k in entries], merges


def _train(pre, vocab_size: int, initial_alphabet: Sequence[str]) -> tuple[list[str], list[str]]:
    """(tokens in id order, merges as "left right") of a BPE trained on CORPUS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=list(initial_alphabet), show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].__getitem__)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


# --- Models, written the way llama.cpp's convert_hf_to_gguf.py writes them -------------------------

# Our factory family → (general.architecture, llama.cpp's q/k row permutation, Gemma's norm + 1).
GGUF_ARCH = {
    "llama": ("llama", True, False),
    "qwen2": ("qwen2", False, False),
    "qwen3": ("qwen3", False, False),
    "gemma": ("gemma", False, True),
    "gemma2": ("gemma2", False, True),
    "gemma3": ("gemma3", False, True),
}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: rotate-half rows → interleaved pairs, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _metadata(writer, arch: str, config) -> None:
    c = config
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    rope = c.rope_parameters.get("full_attention", c.rope_parameters) if arch == "gemma3" else c.rope_parameters
    writer.add_rope_freq_base(rope["rope_theta"])
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if arch in ("llama", "qwen2", "qwen3"):
        writer.add_rope_dimension_count(head_dim)
    if arch in ("gemma2", "gemma3"):
        writer.add_sliding_window(c.sliding_window)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(c.attn_logit_softcapping)
        writer.add_final_logit_softcapping(c.final_logit_softcapping)


def _llama3_rope_freqs(rope: dict, head_dim: int) -> np.ndarray:
    """The per-frequency divisors llama.cpp writes as rope_freqs.weight for llama3 RoPE scaling."""
    base, factor = rope["rope_theta"], rope["factor"]
    low, high, old = rope["low_freq_factor"], rope["high_freq_factor"], rope["original_max_position_embeddings"]
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


@functools.cache
def tokenizer_vocab_size(kind: str = "gpt2") -> int:
    """The number of tokens add_tokenizer_metadata writes for `kind`: the vocabulary a GGUF test model needs."""
    return len(_byte_level_vocab(600)[0] if kind == "gpt2" else _sentencepiece_vocab(600)[0])


def write_gguf_model(
    hf_model, family: str, out: Path, qtype: str = "F32", tokenizer: str | None = "gpt2", zeros_as: dict[str, str] | None = None
) -> Path:
    """Writes a transformers model as a GGUF file, tensors in `qtype` (F32, F16 or Q8_0; norms stay F32).

    `zeros_as` maps GGUF tensor names to a type whose zero bytes replace that tensor (for types the gguf
    package cannot quantize to)."""
    arch, permute, norm_shift = GGUF_ARCH[family]
    config = hf_model.config
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(f"tiny random {family}")
    _metadata(writer, arch, config)
    if tokenizer is not None:
        tokens = add_tokenizer_metadata(writer, tokenizer)
        assert len(tokens) == config.vocab_size, f"make the model with vocab_size={len(tokens)} (tokenizer_vocab_size)"
    names = gguf.get_tensor_name_map(next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), config.num_hidden_layers)
    tied = config.tie_word_embeddings
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if family == "llama" and config.rope_parameters.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", _llama3_rope_freqs(config.rope_parameters, head_dim))
    for hf_name, tensor in hf_model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        base, suffix = hf_name.rsplit(".", 1)
        assert names.get_name(base) is not None, f"llama.cpp has no {arch} name for {hf_name}"
        name = f"{names.get_name(base)}.{suffix}"
        w = tensor.detach().float().numpy()
        if permute and (".attn_q." in name or ".attn_k." in name):
            w = _permute(w, config.num_attention_heads if ".attn_q." in name else config.num_key_value_heads)
        if norm_shift and name.endswith("norm.weight"):
            w = w + 1
        if name in (zeros_as or {}):
            q = gguf.GGMLQuantizationType[zeros_as[name]]
            block, size = gguf.GGML_QUANT_SIZES[q]
            writer.add_tensor(name, np.zeros((w.shape[0], w.shape[1] // block * size), np.uint8), raw_dtype=q)
        elif w.ndim == 1 or qtype == "F32":
            writer.add_tensor(name, w.astype(np.float32))
        elif qtype == "F16":
            writer.add_tensor(name, w.astype(np.float16))
        else:
            q = gguf.GGMLQuantizationType[qtype]
            writer.add_tensor(name, gguf.quants.quantize(w, q), raw_dtype=q)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
