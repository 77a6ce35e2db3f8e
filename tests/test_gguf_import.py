"""GGUF import: every dequantization type, every supported architecture, and transformers as the oracle.

Small GGUF files are written here with the `gguf` package's own writer, the
way llama.cpp's converter writes them (Llama's q/k rows permuted, Gemma's norm
weights stored as 1 + w, Llama 3's RoPE scaling as a rope_freqs tensor), from
tiny random transformers models. Loading them in jaxspec must give back the
original model's logits; transformers loading the same file is a second oracle.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
import transformers

from jaxspec import load, score
from jaxspec.cli import main
from jaxspec.errors import CheckpointError, UnsupportedModelError
from jaxspec.gguf.reader import read_gguf
from jaxspec.loading import save
from tests.gguf_factory import add_tokenizer_metadata, tokenizer_vocab_size, write_gguf_model
from tests.hf_factory import make_hf_model

PROMPTS = [[5, 17, 3, 40, 22, 9, 61, 7, 13, 30, 2, 44], [8, 1, 19], [70, 71, 72, 73, 74, 75, 76]]
# GGUF cannot say query_pre_attn_scalar, layer_types or Gemma 3's soft-cap, and Gemma 2 has no
# untied head in llama.cpp: the factory's options that the format cannot carry are set to what it implies.
GGUF_OVERRIDES = {
    "gemma2": dict(query_pre_attn_scalar=16, tie_word_embeddings=True),
    "gemma3": dict(query_pre_attn_scalar=16, num_hidden_layers=6, layer_types=None, final_logit_softcapping=None),
}


def _model(family: str, path, **overrides):
    """A tiny random transformers model whose vocabulary is the GGUF test tokenizer's."""
    return make_hf_model(family, path, vocab_size=tokenizer_vocab_size(), **{**GGUF_OVERRIDES.get(family, {}), **overrides})


def _logprobs(model, params) -> list[np.ndarray]:
    return [np.array(r["logprobs"][1:], float) for r in score(model, params, PROMPTS)]


def _hf_logprobs(hf) -> list[np.ndarray]:
    out = []
    for p in PROMPTS:
        with torch.no_grad():
            logits = hf(torch.tensor([p])).logits[0].double()
        out.append(torch.log_softmax(logits, -1)[:-1].gather(1, torch.tensor(p[1:])[:, None])[:, 0].numpy())
    return out


def _assert_close(a: list[np.ndarray], b: list[np.ndarray], tol: float) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=tol, rtol=0)


# --- Tensors -----------------------------------------------------------------------------------------

def _dequantizable_types() -> list[gguf.GGMLQuantizationType]:
    from gguf.quants import _type_traits

    return [gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, *sorted(_type_traits)]


@pytest.mark.parametrize("qtype", _dequantizable_types(), ids=lambda t: t.name)
def test_every_dequantization_type_equals_the_gguf_package(tmp_path, qtype):
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = 3, 2 * block
    rs = np.random.RandomState(int(qtype))
    # Bytes below 0x3C make every fp16/bf16/e8m0 scale inside a block finite and small.
    raw = rs.randint(0, 0x3C, size=(rows, cols // block * type_size)).astype(np.uint8)
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    if qtype == gguf.GGMLQuantizationType.F32:
        w.add_tensor("t", raw.view(np.float32))
    elif qtype == gguf.GGMLQuantizationType.F16:
        w.add_tensor("t", raw.view(np.float16))
    else:
        w.add_tensor("t", raw, raw_dtype=qtype)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()

    tensor = read_gguf(tmp_path / "t.gguf").tensors["t"]
    assert tensor.shape == (rows, cols)
    ours = tensor.dequantize()
    ref = gguf.quants.dequantize(raw.view(np.float32) if qtype.name == "F32" else raw.view(np.float16) if qtype.name == "F16" else raw, qtype)
    assert ours.dtype == np.float32 and ours.shape == (rows, cols)
    np.testing.assert_array_equal(ours, np.asarray(ref, np.float32).reshape(rows, cols))
    assert np.isfinite(ours).all()


# --- Architectures -----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3"])
def test_gguf_written_like_llama_cpp_loads_as_the_original_model(tmp_path, family):
    """Float32 tensors: the GGUF holds exactly the original weights, so the logits must agree to float32
    rounding. Exercises the name map, every convention undone, and the config from metadata alone."""
    hf = _model(family, tmp_path / "hf")
    path = write_gguf_model(hf, family, tmp_path / "m.gguf", "F32")
    lm = load(path)
    assert lm.format == "gguf" and lm.model.config.model_type == hf.config.model_type
    _assert_close(_logprobs(lm.model, lm.params), _hf_logprobs(hf), 1e-4)


@pytest.mark.parametrize("qtype", ["Q8_0", "F16"])
def test_quantized_llama_matches_transformers_on_the_same_file(tmp_path, qtype):
    """transformers dequantizes the same GGUF itself; jaxspec's logits must equal its logits, and
    `jaxspec convert` must write a directory transformers loads to the same logits."""
    hf = _model("llama_linear_mqa_tied", tmp_path / "hf", rope_parameters=dict(rope_type="default", rope_theta=10000.0))
    path = write_gguf_model(hf, "llama", tmp_path / "m.gguf", qtype)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32).eval()
    lm = load(path)
    ours = _logprobs(lm.model, lm.params)
    _assert_close(ours, _hf_logprobs(ref), 1e-4)
    # The quantization is real: the original weights give measurably different logits.
    assert max(np.abs(a - b).max() for a, b in zip(ours, _hf_logprobs(hf))) > 1e-4

    assert main(["convert", str(path), str(tmp_path / "out"), "--to", "hf"]) == 0
    converted = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.float32).eval()
    _assert_close(_hf_logprobs(converted), ours, 1e-4)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert tok("def add(a, b):")["input_ids"] == lm.tokenizer.encode("def add(a, b):")


def test_llama3_rope_recovered_from_rope_freqs(tmp_path):
    hf = _model("llama", tmp_path / "hf")  # llama3 RoPE scaling, untied head
    path = write_gguf_model(hf, "llama", tmp_path / "m.gguf", "F32")
    lm = load(path)
    assert lm.hf_config["rope_scaling"]["rope_type"] == "llama3"
    _assert_close(_logprobs(lm.model, lm.params), _hf_logprobs(hf), 1e-4)


def test_convert_to_jaxspec_and_back(tmp_path):
    hf = _model("gemma3", tmp_path / "hf")
    path = write_gguf_model(hf, "gemma3", tmp_path / "m.gguf", "Q8_0")
    lm = load(path, "float32")
    save(lm, tmp_path / "js", to="jaxspec")
    again = load(tmp_path / "js")
    assert again.format == "jaxspec" and again.tokenizer.encode("x = 1") == lm.tokenizer.encode("x = 1")
    _assert_close(_logprobs(again.model, again.params), _logprobs(lm.model, lm.params), 0)
    # Special ids come from the file's tokenizer metadata.
    eos = json.loads((tmp_path / "js" / "generation_config.json").read_text())["eos_token_id"]
    assert again.eos_ids == (eos,) and gguf.GGUFReader(str(path)).fields["tokenizer.ggml.eos_token_id"].contents() == eos


# --- Bad input ---------------------------------------------------------------------------------------

def _one_line_error(capsys, argv, needle: str) -> None:
    capsys.readouterr()  # drop what writing the file printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and needle in err, err


def _tiny_gguf(tmp_path, arch):
    """A GGUF with an architecture, an embedding and a tokenizer: enough to fail on something else."""
    path = tmp_path / "bad.gguf"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    add_tokenizer_metadata(w, "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((tokenizer_vocab_size(), 64), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return path


def test_unsupported_architecture_is_one_line(tmp_path, capsys):
    path = _tiny_gguf(tmp_path, arch="mamba")
    _one_line_error(capsys, ["info", str(path)], "GGUF architecture 'mamba' is not supported")
    with pytest.raises(UnsupportedModelError):
        load(path)


def test_unsupported_tensor_type_is_one_line(tmp_path, capsys):
    hf = _model("qwen2", tmp_path / "hf")
    # Q8_K is a type the gguf package cannot dequantize.
    path = write_gguf_model(hf, "qwen2", tmp_path / "m.gguf", "F32", zeros_as={"blk.0.ffn_up.weight": "Q8_K"})
    _one_line_error(capsys, ["generate", "--model", str(path), "--prompt-ids", "1,2"], "Q8_K")
    with pytest.raises(UnsupportedModelError):
        load(path)


def test_truncated_file_is_one_line(tmp_path, capsys):
    hf = _model("qwen2", tmp_path / "hf")
    path = write_gguf_model(hf, "qwen2", tmp_path / "m.gguf", "F32")
    data = path.read_bytes()
    for cut in (len(data) - 100, len(data) // 2, 100, 10):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        _one_line_error(capsys, ["info", str(tmp_path / "cut.gguf")], "truncated")
        with pytest.raises(CheckpointError):
            load(tmp_path / "cut.gguf")


def test_missing_tokenizer_is_one_line(tmp_path, capsys):
    path = write_gguf_model(_model("qwen2", tmp_path / "hf"), "qwen2", tmp_path / "m.gguf", tokenizer=None)
    _one_line_error(capsys, ["convert", str(path), str(tmp_path / "out")], "no tokenizer in the GGUF metadata")
    assert not (tmp_path / "out").exists()


def test_missing_file_and_not_a_gguf(tmp_path, capsys):
    _one_line_error(capsys, ["info", str(tmp_path / "nothing.gguf")], "no such file")
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError):
        load(tmp_path / "fake.gguf")
