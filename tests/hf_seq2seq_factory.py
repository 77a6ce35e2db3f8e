"""Tiny random Hugging Face T5 models (v1.0 and v1.1 style), saved with save_pretrained.

T5's own initialisation is already large (embeddings and the untied head have
std 1), so each family gets the scale that makes greedy text non-degenerate
while its logits stay small enough for float32 parity at 1e-4. The relative
position bias is drawn large so that a wrong bucket would show in the logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from tests.tokenizer_factory import write_tokenizer

VOCAB = 96

BASE = dict(
    vocab_size=VOCAB,
    d_model=64,
    d_kv=16,
    d_ff=128,
    num_heads=4,
    num_layers=2,
    num_decoder_layers=3,
    dropout_rate=0.0,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

# family → (options that bite, initializer_factor, scale of the shared embedding). Few buckets and
# short max distances, so that short inputs reach the logarithmic buckets and the saturated last one.
FAMILIES = {
    # T5 v1.0: ReLU MLP, head tied to the shared embedding, decoder output scaled by d_model^-0.5.
    # A tied head on large random embeddings just echoes the input token; a small embedding lets the
    # blocks speak.
    "t5_v1_0": (
        dict(
            feed_forward_proj="relu",
            tie_word_embeddings=True,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=20,
        ),
        1.5,
        0.1,
    ),
    # T5 v1.1 as transformers 5 makes it fresh: gated tanh-GELU MLP, no scaling, and the head tied to the
    # shared embedding (its config says tie_word_embeddings=true, scale_decoder_outputs=false; the file
    # has no lm_head.weight).
    "t5_v1_1_fresh": (
        dict(
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            relative_attention_num_buckets=16,
            relative_attention_max_distance=24,
        ),
        1.5,
        0.1,
    ),
    # T5 v1.1 / Flan-T5 as released: gated tanh-GELU MLP, a separate head, no scaling.
    "t5_v1_1": (
        dict(
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            relative_attention_num_buckets=16,
            relative_attention_max_distance=24,
        ),
        0.7,
        1.0,
    ),
}


# Released-style config.json files (written before transformers 5): tie_word_embeddings=false and no
# scale_decoder_outputs field, which transformers 5 reads as "no scaling".
RELEASED_STYLE = {"t5_v1_1_released": "t5_v1_1"}


def make_t5(family: str, out: Path, seed: int = 0) -> transformers.T5ForConditionalGeneration:
    """Builds, saves (config.json, model.safetensors, tokenizer.json) and returns a random T5."""
    if family in RELEASED_STYLE:
        make_t5(RELEASED_STYLE[family], out, seed)
        config = json.loads((out / "config.json").read_text())
        config.pop("scale_decoder_outputs")
        (out / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
        return transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    options, factor, embedding_scale = FAMILIES[family]
    config = transformers.T5Config(**BASE, **options, initializer_factor=factor)
    torch.manual_seed(seed)
    model = transformers.T5ForConditionalGeneration(config).eval()
    if family == "t5_v1_1":
        # transformers 5 ties every new T5's head to the shared embedding; released v1.1 checkpoints
        # (Flan-T5, mT5, ByT5) have a head of their own, and so does this one.
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * factor)
    with torch.no_grad():
        model.shared.weight.mul_(embedding_scale)
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif "relative_attention_bias" in name:
                p.normal_(0.0, 2.0)
    model.save_pretrained(out)
    write_tokenizer(out, VOCAB)
    return model
