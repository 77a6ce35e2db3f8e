"""Training on a 2x4 mesh of 8 simulated CPU devices. Run by tests/test_train_sharded.py in its own process
(XLA_FLAGS must be set before jax is imported), so this file is not named test_*.py.

The step-level test builds exactly the model, optimizer and batch shapes of the CLI runs below, so with the
persistent compilation cache the CLI runs reuse its compiled train steps.

Tolerances (float32): a sharded step sums the same numbers in another order (gradients all-reduced over
data, matmuls split over tensor), so losses agree to rtol 1e-5 and params to atol 1e-5 after a few AdamW steps.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import transformers
from jax.sharding import PartitionSpec as P

from jaxspec.sharding import ShardingPlan, parse_mesh
from models import CausalLM, build_model, from_hf_config
from train.cli import main
from train.dataset import BatchStream, open_dataset
from train.metrics import read_metrics
from train.bpe import BOS_ID, EOS_ID, PAD_ID
from train.model_config import fit_to_data, llama_config
from train.optimizer import OptimizerConfig, make_optimizer, make_schedule
from train.placement import OnMesh
from train.seq2seq import PrefixLM
from train.step import init_state, lm_objective, make_train_step

from tests.test_train_data import TINY_MODEL, TINY_VOCAB, one_error_line

LOSS_RTOL = 1e-5
PARAM_ATOL = 1e-5
STEPS, BATCH, ACCUM, WARMUP, LR = 4, 8, 2, 1, 1e-2
COMMON = [*TINY_MODEL, "--steps", str(STEPS), "--warmup", str(WARMUP), "--lr", str(LR), "--batch-size", str(BATCH),
          "--accum", str(ACCUM), "--save-every", "2", "--eval-every", "2", "--eval-batches", "2"]


def test_eight_devices():
    assert jax.device_count() == 8


def _allclose(a, b, **tol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def _steps_on_mesh_equal_one_device(data_dir, model, objective, mesh: str):
    """STEPS AdamW steps of `objective` on one device and on `mesh`, batch by batch: metrics to LOSS_RTOL,
    params and optimizer state to PARAM_ATOL. Returns the mesh's final state."""
    dataset = open_dataset(data_dir)
    opt_cfg = OptimizerConfig(lr=LR, warmup_steps=WARMUP, total_steps=STEPS)
    optimizer, loss_fn = make_optimizer(opt_cfg), objective(model, 0.0)
    state = init_state(model.init_params(jax.random.PRNGKey(0)), optimizer, jax.random.PRNGKey(1))

    plan = ShardingPlan(parse_mesh(mesh)).for_model(model)
    on_mesh = OnMesh(plan, state, None, BATCH, ACCUM, dataset.seq_len + 1)
    one_step = make_train_step(loss_fn, optimizer, make_schedule(opt_cfg))
    mesh_step = make_train_step(loss_fn, optimizer, make_schedule(opt_cfg), on_mesh.shardings)
    one, many = state, jax.device_put(state, on_mesh.shardings.state)
    stream = BatchStream(dataset.train, BATCH, seed=0)
    for _ in range(STEPS):
        index = stream.next_index().reshape(ACCUM, BATCH // ACCUM)
        rows = dataset.train[index.ravel()].astype(np.int32).reshape(ACCUM, BATCH // ACCUM, -1)
        batch = on_mesh.train_batch(dataset.train, index)
        spec = batch.sharding.spec
        assert spec[0] is None and spec[1] is not None  # micro-batch rows over the batch axes, accumulation whole
        np.testing.assert_array_equal(np.asarray(batch), rows)
        one, m_one = one_step(one, rows, None)
        many, m_many = mesh_step(many, batch, None)
        for k in ("loss", "ce", "grad_norm"):
            assert float(m_many[k]) == pytest.approx(float(m_one[k]), rel=LOSS_RTOL)
    _allclose(many["params"], one["params"], atol=PARAM_ATOL, rtol=0)
    _allclose(many["opt_state"], one["opt_state"], atol=PARAM_ATOL, rtol=0)
    return many


def test_sharded_steps_equal_one_device_steps_and_keep_the_state_sharded(data_dir):
    seq_len = open_dataset(data_dir).seq_len
    cfg = fit_to_data(llama_config(32, 2, 4, 2, 64, 2048), TINY_VOCAB, BOS_ID, EOS_ID, PAD_ID, seq_len)
    many = _steps_on_mesh_equal_one_device(data_dir, CausalLM(from_hf_config(cfg)), lm_objective, "data=2,tensor=4")

    # The state left the steps as sharded as it entered: split over tensor, not gathered.
    q = many["params"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == P(None, "tensor") and len(q.sharding.device_set) == 8
    assert q.addressable_shards[0].data.shape == (q.shape[0], q.shape[1] // 4)
    emb = many["params"]["embed_tokens"]["embedding"]
    assert emb.sharding.spec == P("tensor", None)
    assert emb.addressable_shards[0].data.shape == (emb.shape[0] // 4, emb.shape[1])
    mu = many["opt_state"][1][0].mu["layers_0"]["mlp"]["down_proj"]["kernel"]  # AdamW's first moment
    assert mu.sharding.spec == P("tensor", None) and mu.addressable_shards[0].data.shape[0] == mu.shape[0] // 4
    assert many["rng"].sharding.spec == P() and many["step"].sharding.spec == P()


def test_t5gemma_prefix_lm_steps_on_a_mesh_equal_one_device(data_dir):
    """The encoder-decoder trains sharded too: every parameter of both stacks (cross-attention included)
    split by its logical axes, the prefix-LM steps equal to one device's."""
    stack = dict(vocab_size=TINY_VOCAB, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=8, num_hidden_layers=2, max_position_embeddings=256, bos_token_id=BOS_ID,
                 eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    config = transformers.T5GemmaConfig(encoder=transformers.T5GemmaModuleConfig(**stack, hidden_size=40),
                                        decoder=transformers.T5GemmaModuleConfig(**stack, hidden_size=32),
                                        vocab_size=TINY_VOCAB)
    model = build_model({**config.to_dict(), "architectures": ["T5GemmaForConditionalGeneration"]}, "float32")
    many = _steps_on_mesh_equal_one_device(data_dir, model, PrefixLM().loss_fn, "fsdp=2,tensor=4")
    cross_q = many["params"]["decoder"]["layers_0"]["cross_attn"]["q_proj"]["kernel"]
    assert cross_q.sharding.spec == P("fsdp", "tensor")
    assert cross_q.addressable_shards[0].data.shape == (cross_q.shape[0] // 2, cross_q.shape[1] // 4)
    emb = many["params"]["encoder"]["embed_tokens"]["embedding"]
    assert emb.sharding.spec == P("tensor", "fsdp")


def test_block_transformer_steps_on_a_mesh_equal_one_device(data_dir):
    from tests.block_factory import block_config

    model = build_model(block_config(vocab=TINY_VOCAB, max_positions=2048))
    many = _steps_on_mesh_equal_one_device(data_dir, model, lm_objective, "fsdp=2,tensor=4")
    gate = many["params"]["block_decoder"]["layers_0"]["mlp"]["gate_proj"]["kernel"]
    assert gate.sharding.spec == P("fsdp", "tensor")


def _numbers(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(run / "metrics.jsonl")]


def _agree(got: list[dict], want: list[dict]) -> None:
    assert [sorted(r) for r in got] == [sorted(r) for r in want]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=LOSS_RTOL)


@pytest.fixture(scope="module")
def lm_runs(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    base = ["lm", "--data", str(data_dir), *COMMON]
    assert main([*base, "--out", str(root / "one")]) == 0
    assert main([*base, "--out", str(root / "mesh"), "--mesh", "data=2,tensor=4"]) == 0
    return root


def test_cli_lm_on_a_mesh_equals_one_device(lm_runs):
    _agree(_numbers(lm_runs / "mesh"), _numbers(lm_runs / "one"))
    # The export gathered the sharded params whole.
    one = (lm_runs / "one" / "hf" / "model.safetensors").stat().st_size
    assert (lm_runs / "mesh" / "hf" / "model.safetensors").stat().st_size == one


def test_cli_distill_on_a_mesh_equals_one_device(data_dir, lm_runs):
    base = ["distill", "--teacher", str(lm_runs / "one" / "hf"), "--data", str(data_dir), "--hidden", "32",
            "--layers", "1", "--heads", "2", "--kv-heads", "1", "--intermediate", "64", *COMMON[len(TINY_MODEL):]]
    assert main([*base, "--out", str(lm_runs / "d_one")]) == 0
    assert main([*base, "--out", str(lm_runs / "d_mesh"), "--mesh", "fsdp=2,tensor=4"]) == 0
    _agree(_numbers(lm_runs / "d_mesh"), _numbers(lm_runs / "d_one"))


def test_cli_heads_on_a_mesh_equal_one_device(data_dir, lm_runs):
    """Draft heads train sharded over the frozen target's sharded params, as on one device."""
    base = ["heads", "--model", str(lm_runs / "one" / "hf"), "--data", str(data_dir), "--num-heads", "2",
            *COMMON[len(TINY_MODEL):]]
    assert main([*base, "--out", str(lm_runs / "h_one")]) == 0
    assert main([*base, "--out", str(lm_runs / "h_mesh"), "--mesh", "data=2,tensor=4"]) == 0
    _agree(_numbers(lm_runs / "h_mesh"), _numbers(lm_runs / "h_one"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--mesh", "data=8", "--batch-size", "12"], "micro-batch of 12 rows (batch size 12 / accum 1) does not divide over data=8"),
        (["--mesh", "data=2,fsdp=2,tensor=2", "--batch-size", "12", "--accum", "2"],
         "micro-batch of 6 rows (batch size 12 / accum 2) does not divide over data=2xfsdp=2"),
        (["--mesh", "data=3"], "mesh data=3 has 3 devices, but 8 are available"),
    ],
)
def test_bad_mesh_or_batch_is_one_line(data_dir, tmp_path, capsys, flags, message):
    assert main(["lm", "--data", str(data_dir), "--out", str(tmp_path / "run"), *TINY_MODEL, *flags]) == 2
    assert one_error_line(capsys.readouterr().err) == f"jaxspec-train lm: error: {message}"
    assert not (tmp_path / "run").exists()


def test_hat_steps_on_a_mesh_equal_one_device(tmp_path):
    from tests.hat_factory import hat_config
    from tests.test_train_data import write_corpus
    from train.cli import main

    data = tmp_path / "bytes"
    assert main(["data", "--corpus", str(write_corpus(tmp_path / "corpus")), "--bytes", "--seq-len", "64",
                 "--out", str(data)]) == 0
    many = _steps_on_mesh_equal_one_device(data, build_model(hat_config()), lm_objective, "fsdp=2,tensor=4")
    assert many["params"]["connector"]["value"]["kernel"].sharding.spec == P("fsdp", "tensor")
