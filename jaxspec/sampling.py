"""The sampling distribution: one filter used by plain sampling and by every acceptance rule.

Speculative sampling is lossless only if it targets exactly the distribution
plain sampling draws from, so both call `target_distribution` and nothing else.
Filters apply in Hugging Face's order: temperature, top-k, top-p, min-p.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxspec import vocab_reduce
from jaxspec.errors import InputError


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Static (hashable) sampling settings. temperature == 0 means greedy."""

    temperature: float = 0.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise InputError(f"temperature must be >= 0, got {self.temperature}")
        if int(self.top_k) != self.top_k or self.top_k < 0:
            raise InputError(f"top-k must be a non-negative integer, got {self.top_k}")
        if not (0 < self.top_p <= 1):
            raise InputError(f"top-p must be in (0, 1], got {self.top_p}")
        if not (0 <= self.min_p < 1):
            raise InputError(f"min-p must be in [0, 1), got {self.min_p}")
        if self.temperature == 0 and (self.top_k or self.top_p < 1 or self.min_p > 0):
            raise InputError("top-k, top-p and min-p filter sampling: give a temperature > 0 (0 is greedy)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filtered_logits(logits: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """Temperature-scaled logits with filtered-out tokens at -inf. logits: [..., V] float32."""
    x = logits.astype(jnp.float32) / cfg.temperature
    neg_inf = jnp.asarray(-jnp.inf, x.dtype)
    if cfg.top_k and cfg.top_k < x.shape[-1]:
        kth = vocab_reduce.top_k(x, cfg.top_k)[0][..., -1:]
        x = jnp.where(x < kth, neg_inf, x)
    if cfg.top_p < 1.0:
        # Keep the smallest set of most likely tokens whose mass reaches top_p
        # (a token stays if the mass strictly before it is below top_p).
        sorted_x = jnp.sort(x, axis=-1)[..., ::-1]
        sorted_p = jax.nn.softmax(sorted_x, axis=-1)
        mass_before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
        kept = jnp.where(mass_before < cfg.top_p, sorted_x, jnp.inf)
        threshold = jnp.min(kept, axis=-1, keepdims=True)
        x = jnp.where(x < threshold, neg_inf, x)
    if cfg.min_p > 0.0:
        p = jax.nn.softmax(x, axis=-1)
        x = jnp.where(p < cfg.min_p * jnp.max(p, axis=-1, keepdims=True), neg_inf, x)
    return x


def target_distribution(logits: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """The distribution every decoding method samples from: [..., V] probabilities.

    Greedy is the point mass on the argmax, which makes every acceptance rule
    reduce to exact greedy matching.
    """
    if cfg.greedy:
        return jax.nn.one_hot(vocab_reduce.argmax(logits), logits.shape[-1], dtype=jnp.float32)
    return jax.nn.softmax(filtered_logits(logits, cfg), axis=-1)
