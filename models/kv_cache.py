"""A static-shape KV cache with per-row lengths.

Every layer owns one K and one V array (layouts below). Row b holds
its committed tokens in slots [0, lengths[b]). A forward pass writes the K/V of
its T window tokens at [lengths[b], lengths[b] + T) without moving `lengths`;
the caller then commits how many of them to keep. Rejected entries are never
erased: they sit beyond `lengths` and the next write overwrites them.

One array per layer (rather than one stacked array) lets XLA update each in
place inside a while loop; on CPU this roughly doubles decode speed (DESIGN §7).

Layouts are head-major and chosen so that both attention products are plain
batched matmuls with no per-step transpose of the cache:
    keys   [B, KVH, Dh, S]   scores = q[B, KVH, G*T, Dh] @ keys
    values [B, KVH, S, Dh]   out    = probs[B, KVH, G*T, S] @ values
On CPU this cut attention time per layer about three-fold against [B, S, KVH, Dh].

Each cache names the logical axes of its arrays (`logical_axes`), so the engine
can lay any cache out on a device mesh without knowing its structure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from models.switch_in_place import switch_in_place

# Logical axes of the per-layer arrays, by the names jaxspec/sharding.py maps to mesh axes.
KEY_AXES = ("batch", "kv_heads", "head_dim", "length")
VALUE_AXES = ("batch", "kv_heads", "length", "head_dim")


@struct.dataclass
class KVCache:
    keys: tuple[jax.Array, ...]  # per layer [B, KVH, Dh, S]
    values: tuple[jax.Array, ...]  # per layer [B, KVH, S, Dh]
    lengths: jax.Array  # [B] int32

    KEY_SLOT_AXIS = 3
    VALUE_SLOT_AXIS = 2

    @classmethod
    def zeros(cls, num_layers: int, batch: int, max_len: int, num_kv_heads: int, head_dim: int, dtype) -> "KVCache":
        return cls(
            keys=tuple(jnp.zeros((batch, num_kv_heads, head_dim, max_len), dtype) for _ in range(num_layers)),
            values=tuple(jnp.zeros((batch, num_kv_heads, max_len, head_dim), dtype) for _ in range(num_layers)),
            lengths=jnp.zeros((batch,), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[self.KEY_SLOT_AXIS]

    def logical_axes(self) -> "KVCache":
        """This cache's structure with each array replaced by its logical axes."""
        return self.replace(
            keys=(KEY_AXES,) * len(self.keys), values=(VALUE_AXES,) * len(self.values), lengths=("batch",)
        )

    def with_lengths(self, lengths: jax.Array) -> "KVCache":
        """The same slots with `lengths` committed (a drafter rolling its own cache back or forward)."""
        return self.replace(lengths=lengths)

    def commit(self, n_accepted: jax.Array, path: jax.Array | None = None) -> "KVCache":
        """Keeps n_accepted[b] of the window just written in row b.

        For a chain the accepted tokens already sit at [lengths, lengths + n), so
        only `lengths` moves. For a tree, path[b, :n] lists the window indices of
        the accepted nodes; their K/V are gathered into contiguous slots first.
        """
        if path is None or not self.keys:  # a chain, or no layers (the engine's toy models): nothing moves
            return self.replace(lengths=self.lengths + n_accepted.astype(jnp.int32))
        depth = path.shape[1]
        j = jnp.arange(depth)[None, :]
        keep = j < n_accepted[:, None]
        # Gathering slots reads every layer's keys across their slot axis, a strided read per slot, so only
        # a prefix of the path moves: through the deepest accepted node not already in its slot, rounded up
        # to one of a few compiled widths. Where every accepted node sits in place (a chain's prefix of the
        # window, a step that accepted one draft or none), nothing moves.
        misplaced = jnp.max(jnp.where(keep & (path != j), j + 1, 0))
        widths = sorted({min(2**i, depth) for i in range(1, depth.bit_length() + 1)})
        index = jnp.where(misplaced > 0, jnp.searchsorted(jnp.asarray(widths), misplaced), -1)

        def move(m):
            src = self.lengths[:, None] + path[:, :m]
            dst = jnp.where(keep[:, :m], self.lengths[:, None] + j[:, :m], self.max_len)  # out of range: dropped

            def branch(kv):
                keys, values = kv
                return (tuple(move_slots(k, src, dst, self.KEY_SLOT_AXIS) for k in keys),
                        tuple(move_slots(v, src, dst, self.VALUE_SLOT_AXIS) for v in values))

            return branch

        keys, values = switch_in_place(index, [move(m) for m in widths], (self.keys, self.values))
        return KVCache(keys=keys, values=values, lengths=self.lengths + n_accepted.astype(jnp.int32))


def slot_index(a: jax.Array, slots: jax.Array, axis: int) -> tuple[jax.Array, ...]:
    """Index arrays that address a[b, ..., slots[b, j] (at `axis`), ...] for every row b and every j."""
    ndim = a.ndim
    index = []
    for d in range(ndim):
        if d == 0:
            idx = jnp.arange(a.shape[0])
        elif d == axis:
            idx = slots
        else:
            idx = jnp.arange(a.shape[d])
        shape = [1] * ndim
        if d == axis:
            shape[0], shape[d] = slots.shape
        else:
            shape[d] = a.shape[d]
        index.append(idx.reshape(shape))
    return tuple(index)


def write_slots(a: jax.Array, slots: jax.Array, update: jax.Array, axis: int) -> jax.Array:
    """a[b, ..., slots[b, j], ...] = update[b, ..., j, ...]; out-of-range slots are dropped."""
    return a.at[slot_index(a, slots, axis)].set(update.astype(a.dtype), mode="drop")


def move_slots(a: jax.Array, src: jax.Array, dst: jax.Array, axis: int) -> jax.Array:
    gathered = jnp.take_along_axis(a, jnp.expand_dims(src, tuple(d for d in range(1, a.ndim) if d != axis)), axis=axis)
    return write_slots(a, dst, gathered, axis)
