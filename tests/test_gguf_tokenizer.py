"""jaxspec.gguf.tokenizer against transformers' own GGUF tokenizer conversion.

transformers is the oracle only: `AutoTokenizer.from_pretrained(dir, gguf_file=name)`
must give the same ids (special tokens added as it adds them) and the same
`decode(ids, skip_special_tokens=True)` as the `tokenizers.Tokenizer` jaxspec builds.
The real case is Gemma 3 270M over the Python standard library's docstrings and module sources; the
synthetic cases are small GGUF files written by tests/gguf_factory.py.
"""

from __future__ import annotations

import ast
import gc
import json
import sysconfig
import time
import warnings
from pathlib import Path

import gguf
import numpy as np
import pytest
import transformers
from tokenizers import Tokenizer

from jaxspec.errors import CheckpointError, UnsupportedModelError
from jaxspec.gguf.reader import read_gguf
from jaxspec.gguf.tokenizer import build_tokenizer, tokenizer_config
from tests.gguf_factory import CORPUS, add_tokenizer_metadata


EDGE_CASES = [
    "",
    " ",
    "  ",
    "   leading spaces",
    "trailing spaces   ",
    "multiple     spaces   between  words",
    "\n",
    "\n\n\n",
    "line one\nline two\n\nline four\n",
    "\ttab\t\tseparated\t",
    "windows\r\nline\r\nends\r\n",
    " \n \t \n\t mixed whitespace \u00a0 nbsp \u3000 ideographic space",
    "café naïve Zürich São Paulo Ελληνικά русский",
    "中文字符 日本語のテキスト 한국어 العربية עברית हिन्दी ไทย",
    "e\u0301 combining accent, \u200bzero\u200bwidth, \ufeffbom, \U0010fffd private use, \x00 nul \x7f del",
    "emoji 😀🎉 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "<bos>",
    "<bos>Hello<eos>",
    "text with <bos> in the middle and <eos> at the end<eos>",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
    "<pad><unk><mask> [multimodal] <start_of_image><end_of_image>",
    "almost special: <bos <start_of_turn <eos> > <<bos>>",
    "<s> </s> <|endoftext|> <|im_start|>system<|im_end|> <think>hm</think>",
    "literal \u2581 sentencepiece space\u2581\u2581 and <0x41> byte token",
    "numbers 0 12 123 1234567890 3.14159e-10 -42 0xDEADBEEF",
    "It's they're we've I'm you'll he'd IT'S WE'VE",
    "a" * 2000,
    " " * 50 + "x" + "\n" * 40 + "y" + "\t" * 35,
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
]


# --- Gemma 3 270M, the real file --------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_path(reference_gguf) -> Path:
    return reference_gguf


@pytest.fixture(scope="module")
def gemma_metadata(gemma_path) -> dict:
    return read_gguf(gemma_path).metadata


@pytest.fixture(scope="module")
def gemma_build(gemma_metadata) -> tuple[Tokenizer, float]:
    """jaxspec's tokenizer and the seconds its build took."""
    start = time.perf_counter()
    tok = build_tokenizer(gemma_metadata, "gemma-3-270m-q4_k_m.gguf")
    return tok, time.perf_counter() - start


@pytest.fixture(scope="module")
def gemma(gemma_build) -> Tokenizer:
    return gemma_build[0]


@pytest.fixture(scope="module")
def gemma_reference(gemma_path):
    return transformers.AutoTokenizer.from_pretrained(str(gemma_path.parent), gguf_file=gemma_path.name)


@pytest.fixture(scope="module")
def docstrings() -> list[str]:
    """Every docstring in the standard library, unindented as written (a few MB of varied English and code)."""
    out = []
    paths = sorted(p for p in Path(sysconfig.get_paths()["stdlib"]).rglob("*.py") if "site-packages" not in p.parts)
    # Millions of AST nodes trigger the cyclic collector over and over, and each pass rescans
    # the tokenizers already loaded (2.5x slower). ASTs hold no cycles: refcounting frees them.
    gc.disable()
    try:
        for path in paths:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # old invalid escapes in stdlib sources are not our concern
                    tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError):
                continue  # lib2to3 test data and the like
            out += _docstrings(tree)
    finally:
        gc.enable()
    assert sum(len(d.encode()) for d in out) > 1_000_000
    return out


SOURCE_BYTES = 2_000_000


@pytest.fixture(scope="module")
def sources() -> list[str]:
    """Whole stdlib modules, about 2 MB: code, comments and indentation that docstrings lack."""
    out, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(errors="replace")
        out.append(text)
        size += len(text.encode())
        if size >= SOURCE_BYTES:
            break
    return out


_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstrings(tree: ast.Module) -> list[str]:
    # Documented nodes only nest inside statement bodies, so expressions (most of a tree,
    # and what makes ast.walk slow) are never visited.
    out, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DOCUMENTED) and (doc := ast.get_docstring(node, clean=False)):
            out.append(doc)
        for field in _BODIES:
            stack.extend(child for child in getattr(node, field, ()) if isinstance(child, ast.AST))
    return out


def _first_difference(texts, ours, theirs) -> str:
    bad = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    if not bad:
        return ""
    i = bad[0]
    first = f"first {texts[i][:200]!r}:\n ours   {ours[i][:40]}\n theirs {theirs[i][:40]}"
    return f"{len(bad)} of {len(texts)} differ; {first}"


def _assert_same_ids(tok: Tokenizer, reference, texts: list[str]) -> list[list[int]]:
    ours = [e.ids for e in tok.encode_batch(texts)]
    theirs = reference(texts)["input_ids"]
    assert ours == theirs, _first_difference(texts, ours, theirs)
    return ours


def _assert_same_decode(tok: Tokenizer, reference, ids: list[list[int]]) -> None:
    ours = tok.decode_batch(ids, skip_special_tokens=True)
    theirs = reference.batch_decode(ids, skip_special_tokens=True)
    assert ours == theirs, _first_difference(ids, ours, theirs)


def test_gemma_builds_fast(gemma_build):
    tok, seconds = gemma_build
    print(f"\nGemma 3 tokenizer ({tok.get_vocab_size()} tokens) built in {seconds:.1f} s")
    assert tok.get_vocab_size() == 262144
    assert seconds < 60  # ~3 s here; deriving merges naively takes minutes


def test_gemma_matches_transformers_on_stdlib_text(gemma, gemma_reference, docstrings, sources):
    start = time.perf_counter()
    texts = docstrings + sources
    ids = _assert_same_ids(gemma, gemma_reference, texts)
    _assert_same_decode(gemma, gemma_reference, ids)
    megabytes = sum(len(d.encode()) for d in texts) / 1e6
    seconds = time.perf_counter() - start
    print(f"\n{len(docstrings)} docstrings and {len(sources)} modules, {megabytes:.2f} MB, {sum(map(len, ids))} tokens: "
          f"equal ({seconds:.1f} s)")
    assert megabytes > 4


def test_gemma_same_pipeline_as_transformers(gemma, gemma_reference):
    """Vocabulary, all 514,906 derived merges, added tokens, normalizer, decoder: byte for byte."""
    assert gemma.to_str() == gemma_reference.backend_tokenizer.to_str()


def test_gemma_matches_transformers_on_edge_cases(gemma, gemma_reference):
    ids = _assert_same_ids(gemma, gemma_reference, EDGE_CASES)
    _assert_same_decode(gemma, gemma_reference, ids)
    assert ids[EDGE_CASES.index("")] == [2]  # BOS alone
    assert ids[EDGE_CASES.index("<bos>")] == [2, 2]  # the text's <bos> is the special token, not pieces
    # Decoding gives back the text, except special tokens (dropped) and the control characters byte fallback keeps.
    assert gemma.decode(gemma.encode("  Hello,\tworld \n😀 ").ids) == "  Hello,\tworld \n😀 "


def test_gemma_json_round_trip(gemma, docstrings):
    text = gemma.to_str()
    reloaded = Tokenizer.from_str(text)
    assert reloaded.to_str() == text
    sample = EDGE_CASES + docstrings[::10]
    ids = [e.ids for e in gemma.encode_batch(sample)]
    assert [e.ids for e in reloaded.encode_batch(sample)] == ids
    assert reloaded.decode_batch(ids, skip_special_tokens=True) == gemma.decode_batch(ids, skip_special_tokens=True)


def test_gemma_tokenizer_config(gemma_metadata, gemma_reference):
    config = tokenizer_config(gemma_metadata)
    for name in ("bos_token", "eos_token", "unk_token", "pad_token", "add_bos_token", "add_eos_token"):
        assert config[name] == getattr(gemma_reference, name), name
    assert config["bos_token"] == "<bos>" and config["add_bos_token"] is True
    assert config["model_max_length"] == gemma_metadata["gemma3.context_length"]
    assert "chat_template" not in config  # this file carries none


# --- small synthetic files --------------------------------------------------------------------

# (file name, general.architecture, tokenizer kind, add_tokenizer_metadata options)
SYNTHETIC = [
    ("llama-spm", "llama", "llama", {}),
    ("llama-spm-no-bos-flag-eos", "llama", "llama", {"add_bos": None, "add_eos": True, "chat_template": "{{ x }}"}),
    ("phi3-spm", "phi3", "llama", {}),
    ("qwen2-bpe", "qwen2", "gpt2", {"pre": "qwen2"}),
    ("llama3-bpe", "llama", "gpt2", {"pre": "llama-bpe", "add_bos": None}),
    ("gpt2-bpe-default", "gpt2", "gpt2", {"pre": "default", "add_bos": False}),
]

SYNTHETIC_TEXTS = CORPUS + EDGE_CASES


def _write_gguf(path: Path, arch: str, kind: str, **options) -> None:
    """A GGUF holding a tokenizer, the model keys transformers reads to pick a tokenizer class, and a dummy tensor."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(128)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    add_tokenizer_metadata(writer, kind, **options)
    writer.add_tensor("token_embd.weight", np.zeros((1,), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module", params=SYNTHETIC, ids=[case[0] for case in SYNTHETIC])
def synthetic(request, tmp_path_factory):
    """(metadata, jaxspec's tokenizer, transformers' tokenizer) of one synthetic file."""
    name, arch, kind, options = request.param
    directory = tmp_path_factory.mktemp(name)
    _write_gguf(directory / f"{name}.gguf", arch, kind, **options)
    metadata = read_gguf(directory / f"{name}.gguf").metadata
    reference = transformers.AutoTokenizer.from_pretrained(str(directory), gguf_file=f"{name}.gguf")
    return metadata, build_tokenizer(metadata, f"{name}.gguf"), reference


@pytest.fixture(scope="module")
def synthetic_texts(docstrings) -> list[str]:
    return SYNTHETIC_TEXTS + docstrings[::40]


def test_synthetic_matches_transformers(synthetic, synthetic_texts):
    _, tok, reference = synthetic
    ids = _assert_same_ids(tok, reference, synthetic_texts)
    _assert_same_decode(tok, reference, ids)
    assert tok.to_str() == reference.backend_tokenizer.to_str()  # the same pipeline, piece for piece


def test_synthetic_json_round_trip(synthetic, synthetic_texts):
    _, tok, _ = synthetic
    reloaded = Tokenizer.from_str(tok.to_str())
    ids = [e.ids for e in tok.encode_batch(synthetic_texts)]
    assert [e.ids for e in reloaded.encode_batch(synthetic_texts)] == ids
    assert reloaded.decode_batch(ids, skip_special_tokens=True) == tok.decode_batch(ids, skip_special_tokens=True)


def test_synthetic_converted_directory_loads_the_same_in_transformers(synthetic, tmp_path):
    """tokenizer.json + tokenizer_config.json, as `jaxspec convert` writes them, read back by transformers."""
    metadata, tok, reference = synthetic
    config = tokenizer_config(metadata)
    assert (config["add_bos_token"], config["add_eos_token"]) == (reference.add_bos_token, reference.add_eos_token)
    (tmp_path / "tokenizer.json").write_text(tok.to_str())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    # BOS/EOS come from tokenizer.json's post-processor: with a tokenizer.json, transformers
    # drops add_bos_token/add_eos_token from tokenizer_config.json (its attributes then read False).
    assert loaded(SYNTHETIC_TEXTS)["input_ids"] == reference(SYNTHETIC_TEXTS)["input_ids"]
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(loaded, name) == getattr(reference, name), name
    assert loaded.chat_template == reference.chat_template


# --- errors -----------------------------------------------------------------------------------


def _sentencepiece_metadata() -> dict:
    tokens = ["<unk>", "<s>", "</s>", "\u2581", "a", "\u2581a"]
    return {
        "general.architecture": "llama",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": [0.0, 0.0, 0.0, -1.0, -2.0, -3.0],
        "tokenizer.ggml.token_type": [2, 3, 3, 1, 1, 1],
        "tokenizer.ggml.bos_token_id": 1,
    }


@pytest.mark.parametrize("missing", ["tokenizer.ggml.tokens", "tokenizer.ggml.model"])
def test_missing_tokenizer_metadata(missing):
    metadata = _sentencepiece_metadata()
    del metadata[missing]
    with pytest.raises(CheckpointError, match=r"^m\.gguf: no tokenizer in the GGUF metadata \(tokenizer\.ggml\.\*\)$"):
        build_tokenizer(metadata, "m.gguf")


def test_gguf_file_without_tokenizer(tmp_path):
    path = tmp_path / "bare.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((1,), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CheckpointError, match="no tokenizer in the GGUF metadata"):
        build_tokenizer(read_gguf(path).metadata, str(path))


@pytest.mark.parametrize("model", ["t5", "bert", "rwkv"])
def test_unsupported_tokenizer_model(model):
    metadata = dict(_sentencepiece_metadata(), **{"tokenizer.ggml.model": model})
    with pytest.raises(UnsupportedModelError, match=f"m.gguf: GGUF tokenizer model '{model}' is not supported"):
        build_tokenizer(metadata, "m.gguf")


def test_unsupported_pre_tokenizer():
    metadata = dict(_sentencepiece_metadata(), **{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "chatglm-bpe"})
    metadata["tokenizer.ggml.merges"] = []
    with pytest.raises(UnsupportedModelError, match="pre-tokenizer 'chatglm-bpe' is not supported .*qwen2"):
        build_tokenizer(metadata, "m.gguf")


def test_broken_tokenizer_metadata():
    metadata = _sentencepiece_metadata()
    metadata["tokenizer.ggml.scores"] = [0.0]
    with pytest.raises(CheckpointError, match="tokenizer.ggml.scores has 1 entries for 6 tokens"):
        build_tokenizer(metadata, "m.gguf")
    metadata = dict(_sentencepiece_metadata(), **{"tokenizer.ggml.bos_token_id": 99})
    with pytest.raises(CheckpointError, match="bos_token_id = 99 is outside the vocabulary"):
        build_tokenizer(metadata, "m.gguf")
