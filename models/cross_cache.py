"""The decoding cache of an encoder-decoder model: the decoder's self-attention
KV cache plus the cross-attention K/V of every decoder layer.

The cross K/V depend only on the encoder output, so `start` computes them once
per prompt and every decoding step only reads them. The engine sees the same
surface as a decoder-only cache: `.lengths` and `.max_len` of the decoder's
self-attention cache, and `commit` / `with_lengths`, which move only that cache.

Layouts match models/kv_cache.py, so the attention code is shared:
    cross_keys    per decoder layer [B, KVH, Dh, S_src]
    cross_values  per decoder layer [B, KVH, S_src, Dh]
    source_mask   [B, S_src] bool: real source tokens (the rest is padding)
"""

from __future__ import annotations

import jax
from flax import struct

from models.kv_cache import KEY_AXES, VALUE_AXES, KVCache


@struct.dataclass
class CrossCache:
    self_attn: KVCache
    cross_keys: tuple[jax.Array, ...]
    cross_values: tuple[jax.Array, ...]
    source_mask: jax.Array

    @property
    def lengths(self) -> jax.Array:
        return self.self_attn.lengths

    @property
    def max_len(self) -> int:
        return self.self_attn.max_len

    def logical_axes(self) -> "CrossCache":
        """This cache's structure with each array replaced by its logical axes (models/kv_cache.py)."""
        return self.replace(
            self_attn=self.self_attn.logical_axes(),
            cross_keys=(KEY_AXES,) * len(self.cross_keys),
            cross_values=(VALUE_AXES,) * len(self.cross_values),
            source_mask=("batch", "length"),
        )

    def with_lengths(self, lengths: jax.Array) -> "CrossCache":
        return self.replace(self_attn=self.self_attn.with_lengths(lengths))

    def commit(self, n_accepted: jax.Array, path: jax.Array | None = None) -> "CrossCache":
        return self.replace(self_attn=self.self_attn.commit(n_accepted, path))
