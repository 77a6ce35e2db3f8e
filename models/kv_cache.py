"""A static-shape KV cache with per-row lengths.

Every layer owns one K and one V array of shape [B, S, KVH, Dh]. Row b holds
its committed tokens in slots [0, lengths[b]). A forward pass writes the K/V of
its T window tokens at [lengths[b], lengths[b] + T) without moving `lengths`;
the caller then commits how many of them to keep. Rejected entries are never
erased: they sit beyond `lengths` and the next write overwrites them.

One array per layer (rather than one stacked array) lets XLA update each in
place inside a while loop; on CPU this roughly doubles decode speed (DESIGN §7).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    lengths: jax.Array  # [B] int32

    @classmethod
    def zeros(cls, num_layers: int, batch: int, max_len: int, num_kv_heads: int, head_dim: int, dtype) -> "KVCache":
        shape = (batch, max_len, num_kv_heads, head_dim)
        return cls(
            keys=tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
            values=tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
            lengths=jnp.zeros((batch,), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[1]

    def commit(self, n_accepted: jax.Array, path: jax.Array | None = None) -> "KVCache":
        """Keeps n_accepted[b] of the window just written in row b.

        For a chain the accepted tokens already sit at [lengths, lengths + n), so
        only `lengths` moves. For a tree, path[b, :n] lists the window indices of
        the accepted nodes; their K/V are gathered into contiguous slots first.
        """
        if path is None:
            return self.replace(lengths=self.lengths + n_accepted.astype(jnp.int32))
        batch, depth = path.shape
        rows = jnp.arange(batch)[:, None]
        src = self.lengths[:, None] + path
        dst = self.lengths[:, None] + jnp.arange(depth)[None, :]
        keep = jnp.arange(depth)[None, :] < n_accepted[:, None]
        dst = jnp.where(keep, dst, self.max_len)  # out of range: dropped

        def gather(a):
            return a.at[rows, dst].set(a[rows, src], mode="drop")

        return KVCache(
            keys=tuple(gather(k) for k in self.keys),
            values=tuple(gather(v) for v in self.values),
            lengths=self.lengths + n_accepted.astype(jnp.int32),
        )
