"""Train a byte-level BPE tokenizer and save it as a Hugging Face tokenizer.json.

Byte-level means every byte has a token, so any text encodes without an
unknown token, and the ByteLevel decoder turns ids back into the exact text.
Encoding prepends <s>, as every packed file starts with it, so a prompt looks
like the start of a file to the model (packing itself adds <s> and </s> and
encodes without special tokens).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from jaxspec.atomic import atomic_directory
from train.errors import TrainingError

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIALS = (PAD, BOS, EOS)  # ids 0, 1, 2: the order fixes the ids
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
TOKENIZER_FILE = "tokenizer.json"
# Lets transformers' AutoTokenizer open the same directory.
TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": BOS,
    "eos_token": EOS,
    "pad_token": PAD,
}


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    min_size = 256 + len(SPECIALS)
    if vocab_size < min_size:
        raise TrainingError(f"vocab size must be at least {min_size} (256 bytes + specials), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    for i, name in enumerate(SPECIALS):
        assert tok.token_to_id(name) == i, "special token ids are fixed by their order"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
    )
    return tok


# Begin- and end-of-text tokens by name: ours first, then those of the families jaxspec loads.
BOS_NAMES = (BOS, "<bos>", "<|begin_of_text|>", "<|endoftext|>")
EOS_NAMES = (EOS, "<eos>", "<|end_of_text|>", "<|endoftext|>")


def special_ids(tok: Tokenizer, where) -> tuple[int, int, int]:
    """(pad, bos, eos) ids of a tokenizer: ours (0, 1, 2), or a foreign model's, so that a frozen target
    (heads, exit adapters) trains on text tokenized as it was; pad falls back to eos."""
    def first(names):
        return next((tok.token_to_id(n) for n in names if tok.token_to_id(n) is not None), None)

    bos, eos = first(BOS_NAMES), first(EOS_NAMES)
    if bos is None or eos is None:
        raise TrainingError(
            f"{where}: no begin/end-of-text tokens among {', '.join(BOS_NAMES)} / {', '.join(EOS_NAMES)}"
        )
    pad = tok.token_to_id(PAD)
    return (eos if pad is None else pad), bos, eos


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> None:
    with atomic_directory(out_dir) as tmp:
        tok.save(str(tmp / TOKENIZER_FILE))
        (tmp / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")


def load_tokenizer(path: Path) -> Tokenizer:
    """`path` is a tokenizer.json or a directory holding one."""
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.exists():
        raise TrainingError(f"{file}: no such tokenizer file")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust side raises a bare Exception
        raise TrainingError(f"{file}: unreadable tokenizer ({e})") from None
    special_ids(tok, file)
    return tok
