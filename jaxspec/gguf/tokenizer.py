"""A `tokenizers.Tokenizer` rebuilt from a GGUF file's tokenizer.ggml.* metadata.

A GGUF carries no tokenizer.json: only the vocabulary, scores, token types,
sometimes merges, and the special token ids, under llama.cpp's key names.
The tokenizer built here encodes and decodes exactly as transformers'
`AutoTokenizer.from_pretrained(dir, gguf_file=...)` does, so that a converted
directory and the GGUF itself agree token for token. transformers is the
reference but is never imported: everything is rebuilt with `tokenizers`.

Two vocabulary families exist:

* "llama": sentencepiece BPE (text spelled with "▁" for spaces, byte-fallback
  tokens <0x00>..<0xFF>). The file usually lists no merges, so they are
  recovered from the vocabulary. Gemma files and Phi-3 files need their own
  variants, picked by general.architecture as transformers picks them.
* "gpt2": byte-level BPE with merges; `tokenizer.ggml.pre` names the regex
  that splits text before merging. (A sentencepiece vocabulary ignores `pre`,
  as llama.cpp does.)

Where transformers would invent a token the file lacks (a tokenizer class's
default "<mask>" or "<|endoftext|>" added with an id past the vocabulary), this
module does not: such ids would index past the model's embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from jaxspec.errors import CheckpointError, UnsupportedModelError

_CONTROL = 3  # llama.cpp's token types
_USER_DEFINED = 4
_SPACE = "\u2581"  # sentencepiece's spelling of a space

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# tokenizer.ggml.pre -> split regex. None stands for GPT-2's own regex, built into the
# ByteLevel pre-tokenizer, which transformers keeps for a file without `pre` or with
# llama.cpp's "default" or "gpt-2".
_BYTE_LEVEL_SPLITS: dict[str | None, str | None] = {
    None: None,
    "default": None,
    "gpt-2": None,
    **dict.fromkeys(
        ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"]
        + ["dbrx", "smaug-bpe"],
        _LLAMA3_SPLIT,
    ),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"], _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    **dict.fromkeys(["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"], _GPT4O_SPLIT),
}

# The special tokens each transformers tokenizer class names by default; those
# that are in the vocabulary become special tokens there, so they do here.
_GEMMA_DEFAULT_SPECIALS = ("<unk>", "<bos>", "<eos>", "<pad>", "<mask>")
_LLAMA_DEFAULT_SPECIALS = ("<unk>", "<s>", "</s>")
_GPT2_DEFAULT_SPECIALS = ("<|endoftext|>",)

_SPECIAL_IDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def build_tokenizer(metadata: Mapping[str, Any], where: str) -> Tokenizer:
    """The tokenizer a GGUF file's metadata describes; `where` names the file in errors."""
    tokens = _tokens(metadata, where)
    builder = _builder(metadata, where)
    tok = builder(metadata, tokens, where)
    _add_marked_tokens(tok, metadata, tokens, where)
    named = _named_specials(metadata, tokens, where)
    _add_named_specials(tok, [t for t in named.values() if t is not None])
    add_bos, add_eos = _add_bos_eos(metadata, named)
    bos, eos = named["bos_token"] if add_bos else None, named["eos_token"] if add_eos else None
    tok.post_processor = _bos_eos_template(tok, bos, eos)
    return tok


def tokenizer_config(metadata: Mapping[str, Any]) -> dict:
    """The tokenizer_config.json that goes next to the tokenizer.json `build_tokenizer` makes."""
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    named = {name: _token_at(tokens, metadata.get(key)) for name, key in _SPECIAL_IDS.items()}
    add_bos, add_eos = _add_bos_eos(metadata, named)
    # TokenizersBackend makes transformers load tokenizer.json as it is; a model-specific class
    # would rebuild the pipeline its own way (Qwen2Tokenizer adds NFC, for one).
    config: dict[str, Any] = {"tokenizer_class": "TokenizersBackend", **named}
    config.update(add_bos_token=add_bos, add_eos_token=add_eos, clean_up_tokenization_spaces=False)
    context = metadata.get(f"{metadata.get('general.architecture')}.context_length")
    if isinstance(context, int) and context > 0:
        config["model_max_length"] = context
    if isinstance(metadata.get("tokenizer.chat_template"), str):
        config["chat_template"] = metadata["tokenizer.chat_template"]
    return config


# --- reading the metadata ---------------------------------------------------------------------


def _tokens(metadata: Mapping[str, Any], where: str) -> list[str]:
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not tokens or "tokenizer.ggml.model" not in metadata:
        raise CheckpointError(f"{where}: no tokenizer in the GGUF metadata (tokenizer.ggml.*)")
    return list(tokens)


def _per_token(metadata: Mapping[str, Any], key: str, tokens: Sequence[str], where: str) -> list | None:
    """A per-token array (scores, token types), checked to have one entry per token."""
    values = metadata.get(key)
    if values is None:
        return None
    if len(values) != len(tokens):
        raise CheckpointError(f"{where}: {key} has {len(values)} entries for {len(tokens)} tokens")
    return list(values)


def _token_at(tokens: Sequence[str], token_id: Any) -> str | None:
    if isinstance(token_id, int) and 0 <= token_id < len(tokens):
        return tokens[token_id]
    return None


def _named_specials(metadata: Mapping[str, Any], tokens: Sequence[str], where: str) -> dict[str, str | None]:
    """bos/eos/unk/pad token strings from their ids (None where the file names none)."""
    named = {}
    for name, key in _SPECIAL_IDS.items():
        token_id = metadata.get(key)
        if token_id is not None and _token_at(tokens, token_id) is None:
            raise CheckpointError(f"{where}: {key} = {token_id} is outside the vocabulary of {len(tokens)} tokens")
        named[name] = _token_at(tokens, token_id)
    return named


def _add_bos_eos(metadata: Mapping[str, Any], named: Mapping[str, str | None]) -> tuple[bool, bool]:
    model = metadata.get("tokenizer.ggml.model")
    add_bos = metadata.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:
        # llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise.
        add_bos = model == "llama"
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
    return bool(add_bos) and named.get("bos_token") is not None, add_eos and named.get("eos_token") is not None


# --- choosing and running a builder -----------------------------------------------------------

Builder = Callable[[Mapping[str, Any], list[str], str], Tokenizer]


def _builder(metadata: Mapping[str, Any], where: str) -> Builder:
    model = metadata.get("tokenizer.ggml.model")
    if model == "llama":
        return _SENTENCEPIECE_BY_ARCH.get(metadata.get("general.architecture"), _llama)
    if model == "gpt2":
        return _byte_level
    supported = "'llama' (sentencepiece BPE), 'gpt2' (byte-level BPE)"
    raise UnsupportedModelError(f"{where}: GGUF tokenizer model {model!r} is not supported (supported: {supported})")


def _llama(metadata: Mapping[str, Any], tokens: list[str], where: str) -> Tokenizer:
    """Sentencepiece BPE: a "▁" goes before the text (not after special tokens), spaces become "▁"."""
    vocab = _vocab(tokens)
    tok = _sentencepiece_bpe(vocab, _sentencepiece_merges(metadata, tokens, vocab, where), unk_token=None)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="first", split=False)
    tok.decoder = _sentencepiece_decoder(strip_prefix=True)
    _add_present_specials(tok, vocab, _LLAMA_DEFAULT_SPECIALS)
    return tok


def _phi3(metadata: Mapping[str, Any], tokens: list[str], where: str) -> Tokenizer:
    """Sentencepiece BPE whose prefix "▁" comes from a normalizer, so a leading space is kept as its own "▁"."""
    tok = _llama(metadata, tokens, where)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(_SPACE), normalizers.Replace(" ", _SPACE)])
    tok.pre_tokenizer = None
    return tok


def _gemma(metadata: Mapping[str, Any], tokens: list[str], where: str) -> Tokenizer:
    """Sentencepiece BPE without a prefix "▁", and with Gemma files' two quirks undone.

    Tokens of two or more spaces are stored as real spaces while the text is looked up
    spelled with "▁", so they are respelled. The merge order is the order tokens appear
    in the file, not their scores.
    """
    respelled = [_SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = _vocab(respelled)
    merges = _sentencepiece_merges(metadata, respelled, vocab, where, by_position=True)
    tok = _sentencepiece_bpe(vocab, merges, unk_token="<unk>")
    tok.normalizer = normalizers.Replace(" ", _SPACE)
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    tok.decoder = _sentencepiece_decoder(strip_prefix=False)
    _add_present_specials(tok, vocab, _GEMMA_DEFAULT_SPECIALS)
    return tok


def _byte_level(metadata: Mapping[str, Any], tokens: list[str], where: str) -> Tokenizer:
    """GPT-2 style BPE over bytes spelled as printable characters, split first by the `pre` regex."""
    pre = metadata.get("tokenizer.ggml.pre")
    if pre not in _BYTE_LEVEL_SPLITS:
        known = ", ".join(sorted(p for p in _BYTE_LEVEL_SPLITS if p))
        raise UnsupportedModelError(f"{where}: GGUF pre-tokenizer {pre!r} is not supported (supported: {known})")
    spelling = _byte_spelling()
    alphabet = set(spelling.values())
    vocab = _vocab([t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode()) for t in tokens])
    merges = _file_merges(metadata, where)
    if merges is None:
        raise CheckpointError(f"{where}: byte-level GGUF tokenizer without tokenizer.ggml.merges")
    bpe = models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = _byte_level_split(_BYTE_LEVEL_SPLITS[pre])
    tok.decoder = decoders.ByteLevel()
    _add_present_specials(tok, vocab, _GPT2_DEFAULT_SPECIALS)
    return tok


def _byte_level_split(regex: str | None) -> pre_tokenizers.PreTokenizer:
    if regex is None:
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    split = pre_tokenizers.Split(Regex(regex), behavior="isolated")
    return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


_SENTENCEPIECE_BY_ARCH: dict[str, Builder] = {"gemma": _gemma, "gemma2": _gemma, "gemma3": _gemma, "phi3": _phi3}


# --- sentencepiece pieces ---------------------------------------------------------------------


def _vocab(tokens: Sequence[str]) -> dict[str, int]:
    # A token spelled twice keeps its last id, as a dict comprehension in transformers does.
    return {token: index for index, token in enumerate(tokens)}


def _sentencepiece_bpe(vocab: dict[str, int], merges: list[tuple[str, str]], unk_token: str | None) -> Tokenizer:
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token=unk_token, fuse_unk=True, byte_fallback=True)
    return Tokenizer(bpe)


def _sentencepiece_decoder(strip_prefix: bool) -> decoders.Decoder:
    steps = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if strip_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    return decoders.Sequence(steps)


def _sentencepiece_merges(
    metadata: Mapping[str, Any], tokens: list[str], vocab: dict[str, int], where: str, by_position: bool = False
) -> list[tuple[str, str]]:
    """The file's merges, or else those the vocabulary implies, best first.

    Without `by_position` a merge ranks by its token's score (the last score of a token
    listed twice); with it, by where the token last appears in the file.
    """
    merges = _file_merges(metadata, where)
    if merges is not None:
        return merges
    if by_position:
        scores: dict[str, float] = {token: -index for index, token in enumerate(tokens)}
    else:
        values = _per_token(metadata, "tokenizer.ggml.scores", tokens, where)
        if values is None:
            raise CheckpointError(f"{where}: sentencepiece GGUF tokenizer without tokenizer.ggml.scores or merges")
        scores = dict(zip(tokens, values))
    return _derive_merges(vocab, scores)


def _derive_merges(vocab: Mapping[str, int], scores: Mapping[str, float]) -> list[tuple[str, str]]:
    """Every split of a token into two tokens, as a merge; ranked by (score, left length, right length),
    highest first, ties kept in the order of `scores`, then of the two halves' ids.

    This is transformers' `generate_merges` with a score map, in one pass and one sort.
    """
    pairs: list[tuple[str, str]] = []
    keys: list[tuple[float, int, int]] = []
    for token, score in scores.items():
        found = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
        if len(found) > 1:
            found.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        for left, right in found:
            pairs.append((left, right))
            keys.append((score, len(left), len(right)))
    # Sorting positions by key, highest first, keeps equal keys in insertion order (stable).
    order = sorted(range(len(pairs)), key=keys.__getitem__, reverse=True)
    return [pairs[i] for i in order]


def _file_merges(metadata: Mapping[str, Any], where: str) -> list[tuple[str, str]] | None:
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is None:
        return None
    out = []
    for merge in merges:
        pair = tuple(merge.split(" "))
        if len(pair) != 2:
            raise CheckpointError(f"{where}: malformed entry {merge!r} in tokenizer.ggml.merges")
        out.append(pair)
    return out


def _byte_spelling() -> dict[int, str]:
    """GPT-2's map of each byte to a printable character: printable Latin-1 stays, the rest shifts past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    spelling = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in spelling)
    spelling.update((b, chr(256 + n)) for n, b in enumerate(shifted))
    return spelling


# --- added tokens and the BOS/EOS template ----------------------------------------------------


def _add_present_specials(tok: Tokenizer, vocab: Mapping[str, int], names: Sequence[str]) -> None:
    """A class-default name is special only if the file has it (transformers would append it otherwise)."""
    tok.add_tokens([AddedToken(name, special=True, normalized=False) for name in names if name in vocab])


def _add_marked_tokens(tok: Tokenizer, metadata: Mapping[str, Any], tokens: list[str], where: str) -> None:
    """Control tokens become special tokens and user-defined ones plain added tokens, so text
    spelling them maps to them whole rather than cut into pieces.

    Only tokens the vocabulary spells as the file does: any other would get a fresh id past
    the model's embeddings. That leaves out Gemma's respelled runs of spaces and, in a
    byte-level vocabulary, control tokens spelled outside the byte alphabet (llama.cpp
    mislabels some), as transformers does.
    """
    types = _per_token(metadata, "tokenizer.ggml.token_type", tokens, where) or []
    vocab = tok.get_vocab(with_added_tokens=True)
    control = [t for t, kind in zip(tokens, types) if kind == _CONTROL and t in vocab]
    user = [t for t, kind in zip(tokens, types) if kind == _USER_DEFINED and t in vocab]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])


def _add_named_specials(tok: Tokenizer, names: Sequence[str]) -> None:
    """bos/eos/unk/pad are special whatever their token type says (skipped when decoding)."""
    tok.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in names])


def _bos_eos_template(tok: Tokenizer, bos: str | None, eos: str | None) -> processors.TemplateProcessing:
    single = " ".join(([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else []))
    second = " ".join(([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos}:1"] if eos else []))
    specials = [(t, tok.token_to_id(t)) for t in (bos, eos) if t]
    return processors.TemplateProcessing(single=single, pair=f"{single} {second}", special_tokens=specials)
