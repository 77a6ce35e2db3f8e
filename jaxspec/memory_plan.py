"""Per-device bytes of a model on a mesh, from its config alone: what `jaxspec plan` prints.

Parameters, the KV cache and the train state are laid out by the same ShardingPlan that places them for
real, applied to an AbstractMesh (axis sizes, no devices) and to shapes from jax.eval_shape (no weights),
so those figures are exact: a device holds every array's shard shape, and the rules shard a dimension only
where the mesh axes divide it. Activations depend on what XLA keeps alive, so they are estimates, and say
how they are counted (ActivationModel).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, NamedSharding

from jaxspec.errors import InputError
from jaxspec.sharding import MESH_AXES, ShardingPlan, logical_param_axes, parse_mesh_sizes

# The widest window a decoding step verifies by default: the largest auto tree (32 nodes) plus its root.
VERIFY_WIDTH = 33


def abstract_plan(spec: str) -> ShardingPlan:
    """A ShardingPlan over a mesh of these axis sizes that needs no devices ('data=4,fsdp=16,tensor=4')."""
    sizes = parse_mesh_sizes(spec)
    names = tuple(a for a in MESH_AXES if a in sizes)
    return ShardingPlan(AbstractMesh(tuple(sizes[a] for a in names), names, axis_types=(AxisType.Auto,) * len(names)))


def device_bytes(tree, shardings) -> int:
    """Bytes one device holds of every array in `tree` (shapes) laid out by `shardings` (a matching tree)."""
    leaves = jax.tree_util.tree_leaves(tree)
    specs = jax.tree_util.tree_leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    # x.dtype.itemsize, not np.dtype: a PRNG key (the train state's rng) has a jax dtype of its own.
    return sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize for x, s in zip(leaves, specs))


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    mesh: str
    batch_size: int
    max_len: int
    dtype: str
    params: int  # exact, per device: the params as loaded for decoding, in the model's dtype
    kv_cache: int  # exact: a cache of max_len slots for batch_size rows
    decode_activations: int  # estimate: the larger of the prefill and a VERIFY_WIDTH-token step
    train_params: int  # exact: the params a run initialises and updates (their own dtype, float32)
    optimizer: int  # exact: AdamW's moments and counts, the step and the rng (the train state less its params)
    gradients: int  # one gradient tree, laid out as the train params
    train_activations: int  # estimate
    fallbacks: tuple[str, ...]  # dimensions the mesh does not divide, replicated instead

    @property
    def decode_total(self) -> int:
        return self.params + self.kv_cache + self.decode_activations

    @property
    def train_total(self) -> int:
        return self.train_params + self.optimizer + self.gradients + self.train_activations

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "decode_total": self.decode_total, "train_total": self.train_total}


@dataclasses.dataclass(frozen=True)
class ActivationModel:
    """Local sizes (per device) an activation estimate multiplies: rows and the sharded widths."""

    rows: int
    hidden: int
    heads: int
    kv_width: int  # kv_heads x head_dim
    q_width: int  # heads x head_dim
    mlp: int
    vocab: int
    layers: int
    itemsize: int

    def forward(self, window: int, slots: int, logits: bool) -> int:
        """One forward of `window` tokens against `slots` cached positions, one layer's transients alive at
        a time: the residual stream and its normed copy, q/k/v and the attention output, the float32 scores
        and probabilities, the MLP's gate, up and activation; with `logits`, float32 logits and their
        filtered copy (a prefill's logits are unused, and XLA drops their product)."""
        t = self.rows * window
        per_token = 3 * self.hidden + 2 * self.q_width + 2 * self.kv_width + 3 * self.mlp
        return t * per_token * self.itemsize + 2 * t * self.heads * slots * 4 + (2 * t * self.vocab * 4 if logits else 0)

    def train(self, seq_len: int) -> int:
        """What backpropagation keeps without rematerialisation: per layer the inputs of every product and
        nonlinearity (two norms, q/k/v, attention output, o-projection, gate, up, activation, down input) and
        the float32 attention scores and probabilities; one more layer's worth for the gradients the backward
        pass of a layer holds at once; the float32 logits and their softmax."""
        t = self.rows * seq_len
        per_token = 4 * self.hidden + 2 * self.q_width + 2 * self.kv_width + 3 * self.mlp
        per_layer = t * per_token * self.itemsize + 2 * t * self.heads * seq_len * 4
        return (self.layers + 1) * per_layer + 2 * t * self.vocab * 4


def _local(plan: ShardingPlan, logical: str, size: int) -> int:
    return NamedSharding(plan.mesh, plan.spec((logical,), (size,))[0]).shard_shape((size,))[0]


def plan_memory(model, mesh: str, batch_size: int, max_len: int, prompt_len: int | None = None) -> MemoryPlan:
    """The MemoryPlan of a decoder-only model, a Block Transformer or a HAT (its dtype is the params' and the cache's) on `mesh`, decoding
    batch_size rows into max_len slots after a prompt_len-token prefill (default: half of max_len), and
    training on batch_size rows of max_len tokens with AdamW (train/optimizer.py) in the model's dtype."""
    from train.optimizer import OptimizerConfig, make_optimizer
    from train.step import init_state

    if model.is_encoder_decoder:
        raise InputError("jaxspec plan covers decoder-only models, the Block Transformer and HAT")
    for name, value in (("batch size", batch_size), ("max length", max_len)):
        if int(value) != value or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")
    prompt_len = max_len // 2 if prompt_len is None else prompt_len
    if not 1 <= prompt_len <= max_len:
        raise InputError(f"prompt length must be in [1, max length = {max_len}], got {prompt_len}")
    plan = abstract_plan(mesh).for_model(model)
    params = jax.eval_shape(model.init_params, jax.random.key(0))
    # Loading casts every tensor to the model's dtype (jaxspec.loading.load); training keeps init's dtypes.
    loaded = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, model.dtype), params)
    cache = jax.eval_shape(lambda: model.init_cache(batch_size, max_len))
    state = jax.eval_shape(lambda p: init_state(p, make_optimizer(OptimizerConfig()), jax.random.key(0)), params)
    train_param_bytes = device_bytes(params, plan.param_shardings(params))
    cache_notes = jax.tree_util.tree_map(lambda x, axes: plan.spec(axes, x.shape)[1], cache, cache.logical_axes())
    fallbacks = sorted({
        note
        for path, x in jax.tree_util.tree_leaves_with_path(params)
        for note in plan.spec(logical_param_axes(tuple(k.key for k in path), x.ndim), x.shape)[1]
    } | set(jax.tree_util.tree_leaves(cache_notes)))
    rows = _local(plan, "batch", batch_size)
    if getattr(model, "unit_len", None) is None:
        acts = _activations(plan, model.config, rows, model.dtype)
        decode_acts = max(acts.forward(prompt_len, max_len, logits=False), acts.forward(VERIFY_WIDTH, max_len, logits=True))
        train_acts = acts.train(max_len)
    elif hasattr(model.config, "backbone"):
        decode_acts, train_acts = _hat_activations(plan, model, rows, max_len, prompt_len)
    else:
        decode_acts, train_acts = _two_level_activations(plan, model, rows, max_len, prompt_len)
    return MemoryPlan(
        mesh=mesh, batch_size=batch_size, max_len=max_len, dtype=str(model.dtype),
        params=device_bytes(loaded, plan.param_shardings(loaded)),
        kv_cache=device_bytes(cache, plan.cache_shardings(cache)),
        decode_activations=decode_acts,
        train_params=train_param_bytes,
        optimizer=device_bytes(state, plan.state_shardings(state)) - train_param_bytes,
        gradients=train_param_bytes,
        train_activations=train_acts,
        fallbacks=tuple(fallbacks),
    )



def _activations(plan: ShardingPlan, c, rows: int, dtype) -> ActivationModel:
    """The activation model of a decoder stack (models.config.DecoderConfig) on `rows` local rows."""
    return ActivationModel(
        rows=rows, hidden=c.hidden_size, heads=_local(plan, "heads", c.num_heads),
        kv_width=_local(plan, "kv_heads", c.num_kv_heads) * c.head_dim,
        q_width=_local(plan, "heads", c.num_heads) * c.head_dim, mlp=_local(plan, "mlp", c.intermediate_size),
        vocab=_local(plan, "vocab", c.vocab_size), layers=c.num_layers, itemsize=np.dtype(dtype).itemsize,
    )


def _two_level_activations(plan: ShardingPlan, model, rows: int, max_len: int, prompt_len: int) -> tuple[int, int]:
    """(decode, train) activation estimates of a Block Transformer (models/block_transformer.py).

    Decoding: the larger of the block decoder's prefill over the prompt's blocks and the token decoder's
    window over a partial block (a step is smaller than both). Training: both stacks at once, the block
    decoder over a row's blocks and the token decoder over every block as a sequence of its own.
    """
    c = model.config
    size, width = c.block_length, c.num_prefix + c.block_length - 1
    blocks, slots = max_len // size + 1, max_len // size + 2
    outer = _activations(plan, c.block_decoder, rows, model.dtype)
    inner = _activations(plan, c.token_decoder, rows, model.dtype)
    decode = max(outer.forward(prompt_len // size + 1, slots, logits=False), inner.forward(width, width, logits=True))
    per_block = _activations(plan, c.token_decoder, rows * blocks, model.dtype)
    return decode, outer.train(blocks) + per_block.train(width)


def _hat_activations(plan: ShardingPlan, model, rows: int, max_len: int, prompt_len: int) -> tuple[int, int]:
    """(decode, train) activation estimates of a HAT (models/hat.py), lengths in bytes.

    Decoding: the largest of the three stacks' prefills over the prompt (the backbone over as many word
    slots as bytes, as `start` runs it); a byte step is smaller. Training: all three at once, the byte
    stacks over every byte and the backbone over its word slots (models.hat.TRAIN_BYTES_PER_WORD).
    """
    from models.hat import TRAIN_BYTES_PER_WORD

    c = model.config
    encoder, backbone, decoder = (_activations(plan, s, rows, model.dtype) for s in (c.encoder, c.backbone, c.decoder))
    decode = max(
        encoder.forward(prompt_len, max_len, logits=False),
        backbone.forward(prompt_len, max_len, logits=False),
        decoder.forward(prompt_len, max_len, logits=True),
    )
    slots = max(1, max_len // TRAIN_BYTES_PER_WORD)
    return decode, encoder.train(max_len) + backbone.train(slots) + decoder.train(max_len)
