"""`jaxspec convert`: tensor by tensor between formats, sharded safetensors out, transformers as the oracle."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

from jaxspec import hf_io, load
from jaxspec.cli import main
from jaxspec.convert import convert, open_source
from jaxspec.errors import InputError
from jaxspec.safetensors_out import Entry, parse_size, write_safetensors
from tests.hf_factory import make_hf_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "llama"
    make_hf_model("llama", out)
    return out


def _hf_state(path):
    return {k: v.float().numpy() for k, v in transformers.AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_tensors_are_written_as_they_arrive_in_any_order(tmp_path):
    """Each tensor is in its file before the next is read: no more than one is ever held."""
    rng = np.random.default_rng(0)
    tensors = {f"t{i}": rng.normal(size=(i + 1, 3)).astype(np.float32) for i in range(6)}
    entries = [Entry(n, np.dtype(np.float32), t.shape) for n, t in tensors.items()]
    shard_bytes = 84  # t0..t5 take 12, 24, ..., 72 bytes: shards {t0, t1, t2}, {t3}, {t4}, {t5}
    seen = []

    def stream():
        for name in ["t4", "t1", "t5", "t0", "t3", "t2"]:
            for earlier in seen:  # everything yielded so far is already on disk
                files = sorted(tmp_path.glob("*.safetensors"))
                found = [f for f in files if earlier in safe_open(str(f), "numpy").keys()]
                with safe_open(str(found[0]), "numpy") as f:
                    np.testing.assert_array_equal(f.get_tensor(earlier), tensors[earlier])
            seen.append(name)
            yield name, tensors[name]

    names = write_safetensors(tmp_path, entries, stream(), max_shard_bytes=shard_bytes)
    assert names == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    assert index["weight_map"] == {"t0": names[0], "t1": names[0], "t2": names[0], "t3": names[1], "t4": names[2],
                                   "t5": names[3]}
    for name, file in index["weight_map"].items():
        with safe_open(str(tmp_path / file), "numpy") as f:
            np.testing.assert_array_equal(f.get_tensor(name), tensors[name])


def test_hf_to_sharded_hf_to_jaxspec_to_bfloat16_hf(model_dir, tmp_path):
    """Each hop streams; transformers loads the sharded and the bfloat16 outputs; the values survive."""
    want = _hf_state(model_dir)
    convert(model_dir, tmp_path / "sharded", to="hf", max_shard_bytes=200_000)
    files = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(files) > 2 and (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    got = _hf_state(tmp_path / "sharded")
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert (tmp_path / "sharded" / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()

    convert(tmp_path / "sharded", tmp_path / "js")
    convert(tmp_path / "js", tmp_path / "bf16", to="hf", dtype="bfloat16")
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    half = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    for k, v in half.state_dict().items():
        assert v.dtype == torch.bfloat16
        np.testing.assert_array_equal(v.float().numpy(), want[k].astype(jax.numpy.bfloat16).astype(np.float32))
    # What jaxspec loads from every hop is the same model.
    a, b = load(model_dir), load(tmp_path / "js")
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_source_opens_from_headers_alone(model_dir, tmp_path):
    convert(model_dir, tmp_path / "js")
    for path in (model_dir, tmp_path / "js"):
        source = open_source(path)
        assert {p: (s.shape, s.dtype) for p, s in source.shapes.items()} == {
            p: (x.shape, x.dtype) for p, x in hf_io.flatten(load(path).params).items()
        }


def test_bad_sizes_and_cli(capsys, model_dir, tmp_path):
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2MiB") == 2 * 2**20 and parse_size("100") == 100
    for bad in ("", "5XB", "-1GB", "0"):
        with pytest.raises(InputError, match="bad size"):
            parse_size(bad)
    assert main(["convert", str(model_dir), str(tmp_path / "out"), "--to", "hf", "--max-shard-size", "5XB"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("expected a positive number with an optional unit (KB, MB, GB)")
    assert not (tmp_path / "out").exists()
    assert main(["convert", str(model_dir), str(tmp_path / "out"), "--to", "hf", "--max-shard-size", "100KB"]) == 0
    assert "tensors, one at a time" in capsys.readouterr().err
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) > 1
