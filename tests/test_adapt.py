"""Decoder-only Gemma 2 → T5Gemma (`jaxspec adapt`), then prefix-LM continued pretraining (`jaxspec-train prefix-lm`).

The adapted checkpoint loads in jaxspec and in transformers with the same
logits, holds exactly the source's weights under the documented mapping, and
its loss goes down in a short prefix-LM run.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from jaxspec.cli import main as jaxspec_main
from jaxspec.loading import load
from jaxspec.generate import score
from models import T5Gemma
from train.cli import main as train_main
from train.metrics import read_metrics

from tests.hf_factory import make_hf_model
from tests.test_train_data import TINY_VOCAB, one_error_line

# Adapted tensor ← source tensor, written out independently of jaxspec/adapt.py's table.
MAPPING = [
    (r"model\.(encoder|decoder)\.embed_tokens\.weight", r"model.embed_tokens.weight"),
    (r"model\.(encoder|decoder)\.norm\.weight", r"model.norm.weight"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.pre_self_attn_layernorm\.weight", r"model.layers.\2.input_layernorm.weight"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.post_self_attn_layernorm\.weight", r"model.layers.\2.post_attention_layernorm.weight"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.self_attn\.(\w+)\.weight", r"model.layers.\2.self_attn.\3.weight"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.mlp\.(\w+)\.weight", r"model.layers.\2.mlp.\3.weight"),
    (r"model\.(encoder|decoder)\.layers\.(\d+)\.(pre|post)_feedforward_layernorm\.weight", r"model.layers.\2.\3_feedforward_layernorm.weight"),
    (r"model\.decoder\.layers\.(\d+)\.pre_cross_attn_layernorm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"model\.decoder\.layers\.(\d+)\.post_cross_attn_layernorm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"model\.decoder\.layers\.(\d+)\.cross_attn\.(\w+)\.weight", r"model.layers.\1.self_attn.\2.weight"),
    (r"lm_head\.out_proj\.weight", r"lm_head.weight"),
]


def _source_name(name: str) -> str:
    for pattern, source in MAPPING:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, source, name)
    raise AssertionError(f"no source for {name}")


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, data_dir):
    """(source dir, adapted dir): a tiny random Gemma 2 with the training data's tokenizer, adapted by the CLI."""
    root = tmp_path_factory.mktemp("adapt")
    src, out = root / "gemma2", root / "t5gemma"
    make_hf_model("gemma2", src, vocab_size=TINY_VOCAB, num_hidden_layers=2)  # one sliding, one global layer
    (src / "tokenizer.json").write_bytes((data_dir / "tokenizer.json").read_bytes())
    assert jaxspec_main(["adapt", str(src), str(out)]) == 0
    return src, out


def test_adapted_model_loads_in_jaxspec_and_transformers(adapted):
    src, out = adapted
    source, lm = load(src), load(out)
    assert isinstance(lm.model, T5Gemma) and lm.tokenizer is not None
    # Both stacks compute the source's block: every field of the parsed configs agrees but the names
    # (and head tying, which is the whole model's, below).
    names = dict(architecture="", model_type="", tie_word_embeddings=False)
    for stack in (lm.model.config.encoder, lm.model.config.decoder):
        assert dataclasses.replace(stack, **names) == dataclasses.replace(source.model.config, **names)
    assert lm.model.config.tie_word_embeddings == source.model.config.tie_word_embeddings
    assert lm.model.config.decoder_start_token_id == source.model.config.bos_token_id

    hf = transformers.T5GemmaForConditionalGeneration.from_pretrained(out).eval()
    src_ids, target = [5, 17, 42, 9, 100, 7, 61], [3, 88, 12, 250, 4]
    start = lm.model.config.decoder_start_token_id
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([src_ids]), decoder_input_ids=torch.tensor([[start] + target[:-1]])).logits[0]
    assert torch.isfinite(logits).all()
    ref = torch.log_softmax(logits.double(), -1).gather(1, torch.tensor(target)[:, None])[:, 0].numpy()
    [ours] = score(lm.model, lm.params, [src_ids], [target])
    np.testing.assert_allclose(ours["logprobs"], ref, atol=1e-4, rtol=0)


def test_weights_match_the_source_layer_by_layer(adapted):
    src, out = adapted
    source, target = load_file(str(src / "model.safetensors")), load_file(str(out / "model.safetensors"))
    used = set()
    for name, value in target.items():
        origin = _source_name(name)
        np.testing.assert_array_equal(value, source[origin], err_msg=f"{name} <- {origin}")
        used.add(origin)
    assert used == set(source)  # nothing of the source is left behind
    # Two stacks of the source's depth, cross-attention in every decoder layer.
    layers = max(int(m.group(1)) for n in source if (m := re.match(r"model\.layers\.(\d+)\.", n))) + 1
    assert {n for n in target if ".cross_attn.q_proj." in n} == {
        f"model.decoder.layers.{i}.cross_attn.q_proj.weight" for i in range(layers)
    }


def test_unsupported_sources_are_one_line_errors(tmp_path, adapted, capsys):
    _, out = adapted
    make_hf_model("llama", tmp_path / "llama")
    capsys.readouterr()  # transformers' progress bars
    assert jaxspec_main(["adapt", str(tmp_path / "llama"), str(tmp_path / "x")]) == 2
    assert "Gemma2ForCausalLM" in one_error_line(capsys.readouterr().err)
    assert jaxspec_main(["adapt", str(out), str(tmp_path / "y")]) == 2  # already encoder-decoder
    assert "encoder-decoder" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_prefix_lm_training_lowers_the_loss(adapted, data_dir, tmp_path, capsys):
    _, out = adapted
    run = tmp_path / "run"
    argv = ["prefix-lm", "--init", str(out), "--data", str(data_dir), "--out", str(run), "--steps", "20",
            "--warmup", "4", "--lr", "3e-3", "--batch-size", "8", "--eval-batches", "2", "--save-every", "1000"]
    assert train_main(argv) == 0
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    print("prefix-lm losses:", " ".join(f"{x:.3f}" for x in losses))
    assert len(losses) == 20 and np.mean(losses[-5:]) < losses[0] - 0.5
    exported = load(run / "hf")
    assert isinstance(exported.model, T5Gemma)
