"""Toy-logit models (t5x style): logits are a fixed table lookup of the input token.

They follow the model protocol (init_cache / forward / cache.commit) with no
attention at all, so engine tests compile in a moment and the exact output
distribution of any decoding method is known in closed form: a Markov chain
with transition matrix softmax(table).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from models import KVCache, ModelOutput


@dataclasses.dataclass(frozen=True)
class ToyModel:
    vocab_size: int

    def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
        return KVCache(keys=(), values=(), lengths=jnp.zeros((batch,), jnp.int32))

    def forward(self, params, tokens, positions, cache, window_mask=None) -> ModelOutput:
        logits = params[tokens]
        return ModelOutput(logits, jnp.zeros(tokens.shape + (1,)), cache)


def random_table(seed: int, vocab: int, sharpness: float = 1.5) -> jax.Array:
    return jnp.asarray(np.random.RandomState(seed).randn(vocab, vocab) * sharpness, jnp.float32)
