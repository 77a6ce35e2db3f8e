"""Checkpoints: HF → jaxspec → HF round trips, sharded indexes, and a clear error for each way a directory can be wrong."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from jaxspec import CheckpointError, UnsupportedModelError, load, save
from jaxspec.generate import generate
from jaxspec import hf_io
from tests.hf_factory import make_hf_model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    make_hf_model("llama", path)
    return path


def _tensors(directory):
    return load_file(str(directory / "model.safetensors"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_hf_jaxspec_hf_is_identical(tmp_path, dtype):
    src = tmp_path / "src"
    make_hf_model("qwen3", src, dtype=dtype)
    save(load(src, dtype=None), tmp_path / "js")
    back = tmp_path / "back"
    save(load(tmp_path / "js", dtype=None), back, to="hf")
    a = transformers.AutoModelForCausalLM.from_pretrained(src).state_dict()
    b = transformers.AutoModelForCausalLM.from_pretrained(back).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype == dtype
        assert torch.equal(a[name], b[name]), name
    assert (back / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()


def test_both_forms_generate_the_same(tmp_path, hf_dir):
    save(load(hf_dir), tmp_path / "js")
    prompts = [[5, 6, 7], [9]]
    a = generate(load(hf_dir).model, load(hf_dir).params, prompts, max_new_tokens=8)
    js = load(tmp_path / "js")
    assert js.format == "jaxspec"
    b = generate(js.model, js.params, prompts, max_new_tokens=8)
    assert [r.output_ids for r in a] == [r.output_ids for r in b]


def test_sharded_index_loads(tmp_path):
    model = make_hf_model("llama", tmp_path / "one")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    (tmp_path / "sharded" / "tokenizer.json").write_bytes((tmp_path / "one" / "tokenizer.json").read_bytes())
    assert (tmp_path / "sharded" / hf_io.INDEX_FILE).exists()
    a, b = load(tmp_path / "one"), load(tmp_path / "sharded")
    assert jax.tree_util.tree_structure(a.params) == jax.tree_util.tree_structure(b.params)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        load(tmp_path / "nope")


def test_missing_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load(tmp_path)


def test_missing_tensor_is_named(tmp_path, hf_dir):
    d = _copy(hf_dir, tmp_path / "d")
    t = _tensors(d)
    del t["model.layers.1.mlp.up_proj.weight"]
    save_file(t, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) model\.layers\.1\.mlp\.up_proj\.weight"):
        load(d)


def test_extra_tensor_is_named(tmp_path, hf_dir):
    d = _copy(hf_dir, tmp_path / "d")
    t = _tensors(d)
    t["model.layers.7.mlp.up_proj.weight"] = np.zeros((2, 2), np.float32)
    save_file(t, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) model\.layers\.7\.mlp\.up_proj\.weight"):
        load(d)


def test_wrong_shape_names_tensor_expected_and_got(tmp_path, hf_dir):
    d = _copy(hf_dir, tmp_path / "d")
    t = _tensors(d)
    t["model.norm.weight"] = np.zeros((65,), np.float32)
    save_file(t, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight has shape \[65\], expected \[64\]"):
        load(d)


def test_unknown_architecture(tmp_path, hf_dir):
    d = _copy(hf_dir, tmp_path / "d")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["FalconForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="unknown architecture 'FalconForCausalLM'"):
        load(d)


def test_unsupported_option_is_refused(tmp_path, hf_dir):
    d = _copy(hf_dir, tmp_path / "d")
    cfg = json.loads((d / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="rope type 'yarn' is not supported"):
        load(d)


def test_corrupted_weights_file(tmp_path, hf_dir):
    d = _copy(hf_dir, tmp_path / "d")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted safetensors file"):
        load(d)


def test_corrupted_config(tmp_path, hf_dir):
    d = _copy(hf_dir, tmp_path / "d")
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupted JSON"):
        load(d)


def test_corrupted_orbax_checkpoint(tmp_path, hf_dir):
    save(load(hf_dir), tmp_path / "js")
    for root, _, files in os.walk(tmp_path / "js" / "params"):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "wb") as fh:
                fh.write(b"garbage")
    with pytest.raises(CheckpointError, match="corrupted orbax checkpoint"):
        load(tmp_path / "js")


def test_failed_write_leaves_nothing_behind(tmp_path, hf_dir, monkeypatch):
    """The disk fills after two tensors: the headers and the tensors written so far go with the rest."""
    real = hf_io.write_safetensors

    def two_then_boom(out_dir, entries, tensors, *args):
        def stream():
            for i, item in enumerate(tensors):
                if i == 2:
                    raise OSError("disk full")
                yield item

        return real(out_dir, entries, stream(), *args)

    monkeypatch.setattr(hf_io, "write_safetensors", two_then_boom)
    with pytest.raises(OSError, match="disk full"):
        save(load(hf_dir), tmp_path / "out", to="hf")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_whole_directory(tmp_path, hf_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    save(load(hf_dir), out, to="hf")
    assert not (out / "stale.txt").exists()
    assert (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
