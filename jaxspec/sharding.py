"""Sharding over a device mesh: logical axis names → mesh axes, decided in one place.

Every parameter, cache and batch array has logical axis names (batch, length,
embed, heads, kv_heads, head_dim, mlp, vocab). One `ShardingRules` object maps
each name to mesh axes (data, fsdp, tensor); `ShardingPlan` applies it to
concrete arrays. A dimension the mapped mesh axes do not divide is replicated
instead of failing, and the plan records each such fallback — notably a KV
cache whose kv_heads do not divide the tensor axis is then sharded over batch
only, with its heads replicated. Caches name their arrays' logical axes
themselves (`logical_axes()`, models/kv_cache.py), so any cache a model
defines (an encoder-decoder's cross K/V, a drafter's own) is laid out by the
same rules.

Meshes use Auto axes (compiler-propagated GSPMD sharding). jax 0.10's
`make_mesh` defaults to Explicit axes, under which a matmul whose contracting
dimension is sharded needs an explicit out_sharding everywhere; Auto lets
the same model code run on one device or a mesh unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxspec.errors import InputError
from models.kv_cache import KEY_AXES

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axes of each parameter, by the last module name and leaf name.
_PARAM_AXES = {
    ("embed_tokens", "embedding"): ("vocab", "embed"),
    ("q_proj", "kernel"): ("embed", "heads"),
    ("k_proj", "kernel"): ("embed", "kv_heads"),
    ("v_proj", "kernel"): ("embed", "kv_heads"),
    ("o_proj", "kernel"): ("heads", "embed"),
    ("q_proj", "bias"): ("heads",),
    ("k_proj", "bias"): ("kv_heads",),
    ("v_proj", "bias"): ("kv_heads",),
    ("o_proj", "bias"): ("embed",),
    ("gate_proj", "kernel"): ("embed", "mlp"),
    ("up_proj", "kernel"): ("embed", "mlp"),
    ("down_proj", "kernel"): ("mlp", "embed"),
    ("gate_proj", "bias"): ("mlp",),
    ("up_proj", "bias"): ("mlp",),
    ("down_proj", "bias"): ("embed",),
    ("q_norm", "scale"): ("head_dim",),
    ("k_norm", "scale"): ("head_dim",),
    ("lm_head", "kernel"): ("embed", "vocab"),
    # T5 (models/t5.py): attention q/k/v/o, the MLP's wi (wi_0, wi_1 where gated) and wo, the shared
    # embedding, per-head relative position biases over buckets. T5 has no grouped KV heads.
    ("q", "kernel"): ("embed", "heads"),
    ("k", "kernel"): ("embed", "kv_heads"),
    ("v", "kernel"): ("embed", "kv_heads"),
    ("o", "kernel"): ("heads", "embed"),
    ("wi", "kernel"): ("embed", "mlp"),
    ("wi_0", "kernel"): ("embed", "mlp"),
    ("wi_1", "kernel"): ("embed", "mlp"),
    ("wo", "kernel"): ("mlp", "embed"),
    ("shared", "embedding"): ("vocab", "embed"),
    ("relative_attention_bias", "embedding"): ("buckets", "heads"),
    # T5Gemma's untied head (models/t5gemma.py).
    ("out_proj", "kernel"): ("embed", "vocab"),
    # Medusa's ResBlocks (models/medusa.py): D -> D, the output side like an MLP's hidden.
    ("res_block", "kernel"): ("embed", "mlp"),
    ("res_block", "bias"): ("mlp",),
    # Hydra's input projection (models/hydra.py): [(k + 2) D, D], the output side like the ResBlocks'.
    ("res_proj", "kernel"): ("embed", "mlp"),
    # The EAGLE drafter's fusion of [token embedding, feature] (models/eagle.py): [2 D, D], likewise.
    ("fc", "kernel"): ("embed", "mlp"),
    # The Block Transformer (models/block_transformer.py): its block embedder (token table, start block,
    # the projection variant's [L * De, D]) and the context's expansion into the token decoder's prefix.
    ("embedder", "embedding"): ("vocab", "embed"),
    ("embedder", "start"): ("embed",),
    ("embedder_proj", "kernel"): ("mlp", "embed"),
    ("context_proj", "kernel"): ("embed", "mlp"),
    ("context_proj", "bias"): ("mlp",),
    # HAT (models/hat.py): the byte table, the connector's per-head query and its projections (in and out
    # of its heads, like attention's), and the predictive embedding's p_0 and projection to the byte width.
    ("embed_bytes", "embedding"): ("vocab", "embed"),
    ("connector", "query"): ("heads", "head_dim"),
    ("key", "kernel"): ("embed", "heads"),
    ("value", "kernel"): ("embed", "heads"),
    ("out", "kernel"): ("heads", "embed"),
    ("guide", "first"): ("embed",),
    ("proj", "kernel"): ("embed", "mlp"),
}
# Norm scales: RMSNorm's `scale`, T5's LayerNorm `weight`, one entry per channel.
_NORM_LEAVES = ("scale", "weight")


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """logical axis → mesh axes (a tuple, possibly empty). Hashable, so it can be static under jit."""

    rules: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("batch", ("data", "fsdp")),
        ("length", ()),
        ("embed", ("fsdp",)),
        ("heads", ("tensor",)),
        ("kv_heads", ("tensor",)),
        ("head_dim", ()),
        ("mlp", ("tensor",)),
        ("vocab", ("tensor",)),
        ("layers", ()),
    )

    def mesh_axes(self, logical: str) -> tuple[str, ...]:
        return dict(self.rules).get(logical, ())


def logical_param_axes(path: tuple[str, ...], ndim: int) -> tuple[str, ...]:
    """Logical axes of the parameter at `path` (module names..., leaf)."""
    if len(path) < 2:
        raise ValueError(f"no logical axes known for parameter {'/'.join(path)}")
    if path[-1] in _NORM_LEAVES and path[-2] not in ("q_norm", "k_norm") and ndim == 1:
        return ("embed",)
    axes = _PARAM_AXES.get((path[-2], path[-1]))
    if axes is None or len(axes) != ndim:
        raise ValueError(f"no logical axes known for parameter {'/'.join(path)}")
    return axes


def _names(path) -> tuple[str, ...]:
    """The module and leaf names along a tree path (list and tuple indices, as in optimizer states, skipped)."""
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey) and isinstance(k.key, str))


def parse_mesh_sizes(spec: str) -> dict[str, int]:
    """'data=2,tensor=4' → {"data": 2, "tensor": 4}, checked (axes from MESH_AXES, each once, sizes >= 1)."""
    sizes: dict[str, int] = {}
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\w+)\s*=\s*(\d+)\s*", part)
        if not match:
            raise InputError(f"bad mesh {spec!r}: expected AXIS=SIZE,... with axes from {', '.join(MESH_AXES)}")
        name, size = match.group(1), int(match.group(2))
        if name not in MESH_AXES:
            raise InputError(f"bad mesh axis {name!r} (choose from {', '.join(MESH_AXES)})")
        if name in sizes or size < 1:
            raise InputError(f"bad mesh {spec!r}: repeated axis or size < 1")
        sizes[name] = size
    return sizes


def parse_mesh(spec: str, devices=None) -> Mesh:
    """'data=2,tensor=4' → a Mesh with Auto axes over all (or the given) devices."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = parse_mesh_sizes(spec)
    if math.prod(sizes.values()) != len(devices):
        raise InputError(f"mesh {spec} has {math.prod(sizes.values())} devices, but {len(devices)} are available")
    names = tuple(a for a in MESH_AXES if a in sizes)
    return jax.make_mesh(
        tuple(sizes[a] for a in names), names, axis_types=(AxisType.Auto,) * len(names), devices=devices
    )


@dataclasses.dataclass(frozen=True)
class ShardingPlan:
    mesh: Mesh
    rules: ShardingRules = ShardingRules()
    # Whole units per logical axis whose dimension packs several (a projection's heads x head_dim): a mesh
    # axis splits such a dimension only between units, so no head straddles two devices, and the k/v
    # projections shard exactly as the KV cache does (replicated with it when the KV heads do not divide
    # the tensor axis, rather than sharded and regathered every layer). Set by for_model.
    units: tuple[tuple[str, int], ...] = ()

    def for_model(self, model) -> ShardingPlan:
        """This plan with the model's head counts (its config's `head_counts`) as units; a model without
        them keeps the plan as it is."""
        counts = getattr(getattr(model, "config", None), "head_counts", None)
        if counts is None:
            return self
        heads, kv_heads = counts
        return dataclasses.replace(self, units=(("heads", heads), ("kv_heads", kv_heads)))

    def spec(self, logical_axes: tuple[str, ...], shape: tuple[int, ...]) -> tuple[PartitionSpec, list[str]]:
        """PartitionSpec for an array; mesh axes that do not divide a dimension (or its units) are dropped
        (and reported)."""
        used: set[str] = set()
        entries, fallbacks = [], []
        units = dict(self.units)
        for name, dim in zip(logical_axes, shape):
            axes = tuple(a for a in self.rules.mesh_axes(name) if a in self.mesh.shape and a not in used)
            size = math.prod(self.mesh.shape[a] for a in axes)
            count = units.get(name, dim)
            if axes and (dim % size or count % size):
                what = f"{name}={dim}" if count == dim else f"{name}={count} ({dim} wide)"
                fallbacks.append(f"{what} does not divide over {'x'.join(axes)}={size}: replicated")
                axes = ()
            used.update(axes)
            entries.append(axes[0] if len(axes) == 1 else (axes or None))
        return PartitionSpec(*entries), fallbacks

    def sharding(self, logical_axes, shape) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(tuple(logical_axes), tuple(shape))[0])

    def param_shardings(self, params) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, x: self.sharding(logical_param_axes(tuple(k.key for k in path), x.ndim), x.shape), params
        )

    def shard_params(self, params):
        return jax.device_put(params, self.param_shardings(params))

    def state_shardings(self, tree) -> Any:
        """Shardings for a train state {"params": ..., ...}: params by their logical axes (an unknown
        parameter is an error, never silently replicated); in the rest (optimizer moments that mirror the
        parameter paths, scalars) a leaf whose path ends like a parameter's is sharded like it and
        everything else is replicated."""

        def one(path, x):
            names = _names(path)
            try:
                return self.sharding(logical_param_axes(names, x.ndim), x.shape)
            except ValueError:
                if names[:1] == ("params",):
                    raise
                return self.replicated

        return jax.tree_util.tree_map_with_path(one, tree)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def place(self, tree):
        """Puts a drafter's params on the mesh: arrays already on it stay as they are (the target's own
        params, or arrays computed from them), floating arrays are sharded by their logical axes (an unknown
        one is an error), and index arrays (a draft vocabulary's ids) are replicated."""

        def one(path, x):
            if isinstance(getattr(x, "sharding", None), NamedSharding) and x.sharding.mesh == self.mesh:
                return x
            if not jax.numpy.issubdtype(x.dtype, jax.numpy.floating):
                return jax.device_put(x, self.replicated)
            return jax.device_put(x, self.sharding(logical_param_axes(_names(path), x.ndim), x.shape))

        return jax.tree_util.tree_map_with_path(one, tree)

    def batch_sharding(self, shape) -> NamedSharding:
        """Token arrays [B, T] (or [B])."""
        return self.sharding(("batch", "length")[: len(shape)], shape)

    def cache_fallbacks(self, batch: int) -> list[str]:
        """What a KV cache of `batch` rows could not shard as the rules ask (its rows, or its KV heads: the
        model's units, see for_model)."""
        kv_heads = dict(self.units).get("kv_heads", 1)
        return self.spec(KEY_AXES, (batch, kv_heads, 1, 1))[1]

    def cache_shardings(self, cache) -> Any:
        """Shardings of any cache (an object with `logical_axes()`, models/kv_cache.py), leaf by leaf."""
        return jax.tree_util.tree_map(lambda x, axes: self.sharding(axes, x.shape), cache, cache.logical_axes())

    def constrain_cache(self, cache):
        """Pins a cache's layout inside jit, every array by its logical axes."""
        return jax.tree_util.tree_map(jax.lax.with_sharding_constraint, cache, self.cache_shardings(cache))


def describe(params, plan: ShardingPlan) -> dict[str, str]:
    """'path' → PartitionSpec string, for logs and tests."""
    shardings = plan.param_shardings(params)
    return {
        "/".join(k.key for k in path): str(s.spec)
        for path, s in jax.tree_util.tree_leaves_with_path(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    }

