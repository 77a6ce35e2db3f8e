"""A tiny random Hugging Face T5Gemma, saved with save_pretrained (like tests/hf_factory.py).

Every option that bites is on: soft-caps, sliding windows shorter than the
test inputs (3 in the encoder, 4 in the decoder), GQA, query_pre_attn_scalar
different from head_dim, and an encoder wider than the decoder, so the
cross-attention K/V projections read the encoder's width.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from tests.hf_factory import VOCAB
from tests.tokenizer_factory import write_tokenizer

PAD, BOS, EOS = 0, 1, 2

STACK = dict(
    vocab_size=VOCAB,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    attn_logit_softcapping=5.0,
    final_logit_softcapping=3.0,
    query_pre_attn_scalar=24,
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=PAD,
)
ENCODER = dict(STACK, hidden_size=80, num_hidden_layers=3, sliding_window=3)
DECODER = dict(STACK, hidden_size=64, num_hidden_layers=3, sliding_window=4)


def make_t5gemma(out: Path, seed: int = 0, std: float = 0.3, tie: bool = True, **decoder_overrides):
    """Builds, saves (config.json, model.safetensors, tokenizer.json) and returns a random HF T5Gemma."""
    encoder = transformers.T5GemmaModuleConfig(**ENCODER, initializer_range=std)
    decoder = transformers.T5GemmaModuleConfig(**{**DECODER, **decoder_overrides}, initializer_range=std)
    config = transformers.T5GemmaConfig(
        encoder=encoder, decoder=decoder, vocab_size=VOCAB, tie_word_embeddings=tie, initializer_range=std
    )
    torch.manual_seed(seed)
    model = transformers.T5GemmaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
        # A tied head on random weights echoes the decoder's input token (its own scaled embedding
        # dominates the last hidden state); a decoder embedding 10x smaller keeps greedy text varied.
        model.model.decoder.embed_tokens.weight.mul_(0.1)
    model.save_pretrained(out)
    write_tokenizer(out, VOCAB)
    return model
