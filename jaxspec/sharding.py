"""Sharding over a device mesh: logical axis names → mesh axes, decided in one place.

Every parameter, cache and batch array has logical axis names (batch, length,
embed, heads, kv_heads, head_dim, mlp, vocab). One `ShardingRules` object maps
each name to mesh axes (data, fsdp, tensor); `ShardingPlan` applies it to
concrete arrays. A dimension the mapped mesh axes do not divide is replicated
instead of failing, and the plan records each such fallback — notably a KV
cache whose kv_heads do not divide the tensor axis is then sharded over batch
only, with its heads replicated.

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
    # Medusa's ResBlocks (models/medusa.py): D -> D, the output side like an MLP's hidden.
    ("res_block", "kernel"): ("embed", "mlp"),
    ("res_block", "bias"): ("mlp",),
}
# The KV cache's layouts (models/kv_cache.py): keys [B, KVH, Dh, S], values [B, KVH, S, Dh].
KEY_AXES = ("batch", "kv_heads", "head_dim", "length")
VALUE_AXES = ("batch", "kv_heads", "length", "head_dim")


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
    if path[-1] == "scale" and path[-2] not in ("q_norm", "k_norm"):
        return ("embed",)
    axes = _PARAM_AXES.get((path[-2], path[-1]))
    if axes is None or len(axes) != ndim:
        raise ValueError(f"no logical axes known for parameter {'/'.join(path)}")
    return axes


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
        """This plan with the model's head counts as units (a model without them keeps the plan as it is)."""
        c = getattr(model, "config", None)
        if not (hasattr(c, "num_heads") and hasattr(c, "num_kv_heads")):
            return self
        return dataclasses.replace(self, units=(("heads", c.num_heads), ("kv_heads", c.num_kv_heads)))

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
        """Shardings for any tree holding parameter-shaped leaves (a train state: params, optimizer
        moments that mirror the parameter paths, scalars): a leaf whose path ends like a parameter's
        is sharded like it; everything else is replicated."""

        def one(path, x):
            names = tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey) and isinstance(k.key, str))
            try:
                return self.sharding(logical_param_axes(names, x.ndim), x.shape)
            except (ValueError, IndexError):
                return NamedSharding(self.mesh, PartitionSpec())

        return jax.tree_util.tree_map_with_path(one, tree)

    def batch_sharding(self, shape) -> NamedSharding:
        """Token arrays [B, T] (or [B])."""
        return self.sharding(("batch", "length")[: len(shape)], shape)

    def cache_fallbacks(self, key_shape) -> list[str]:
        """What the key arrays of this shape could not shard as the rules ask (values have the same dims)."""
        return self.spec(KEY_AXES, tuple(key_shape))[1]

    def constrain_cache(self, cache):
        """Pins a KV cache's layout inside jit: keys, values and lengths by their logical axes."""
        pin = lambda axes: lambda x: jax.lax.with_sharding_constraint(x, self.sharding(axes, x.shape))
        return cache.replace(
            keys=tuple(map(pin(KEY_AXES), cache.keys)),
            values=tuple(map(pin(VALUE_AXES), cache.values)),
            lengths=pin(("batch",))(cache.lengths),
        )


def describe(params, plan: ShardingPlan) -> dict[str, str]:
    """'path' → PartitionSpec string, for logs and tests."""
    shardings = plan.param_shardings(params)
    return {
        "/".join(k.key for k in path): str(s.spec)
        for path, s in jax.tree_util.tree_leaves_with_path(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    }

