"""Toy-logit models (t5x style): logits are a fixed table lookup of the input token.

They follow the model protocol of models/protocol.py with no
attention at all, so engine tests compile in a moment and the exact output
distribution of any decoding method is known in closed form: a Markov chain
with transition matrix softmax(table).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from models import KVCache, ModelOutput, Start, decoder_only_start
from models.cross_cache import CrossCache


@dataclasses.dataclass(frozen=True)
class ToyModel:
    vocab_size: int
    is_encoder_decoder = False

    def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
        return KVCache(keys=(), values=(), lengths=jnp.zeros((batch,), jnp.int32))

    def forward(self, params, tokens, positions, cache, window_mask=None) -> ModelOutput:
        logits = params[tokens]
        return ModelOutput(logits, jnp.zeros(tokens.shape + (1,)), cache)

    def start(self, params, prompts, prompt_len, new_slots: int, constrain=None) -> Start:
        return decoder_only_start(self, params, prompts, prompt_len, new_slots, constrain)


@dataclasses.dataclass(frozen=True)
class ToyEncoderDecoder:
    """An encoder-decoder toy: logits = table[token] + source_table[the row's first source token].

    params = {"table": [V, V], "source_table": [V, V]}. `start` "encodes" once: the row's bias goes into
    the CrossCache's cross_keys, and the decoder begins from `start_token`. Row b's decoded text is then a
    Markov chain with transition matrix softmax(table + source_table[source[b, 0]]), starting at start_token.
    """

    vocab_size: int
    start_token: int = 0
    is_encoder_decoder = True

    def start(self, params, prompts, prompt_len, new_slots: int, constrain=None) -> Start:
        b = prompts.shape[0]
        bias = params["source_table"][prompts[:, 0]]
        cache = CrossCache(
            self_attn=KVCache(keys=(), values=(), lengths=jnp.zeros((b,), jnp.int32)),
            cross_keys=(bias,),
            cross_values=(),
            source_mask=jnp.arange(prompts.shape[1])[None, :] < prompt_len[:, None],
        )
        tokens = jnp.full((b, 1), self.start_token, jnp.int32)
        return Start(cache, tokens, jnp.ones((b,), jnp.int32), (prompts, prompt_len))

    def forward(self, params, tokens, positions, cache, window_mask=None) -> ModelOutput:
        logits = params["table"][tokens] + cache.cross_keys[0][:, None, :]
        return ModelOutput(logits, jnp.zeros(tokens.shape + (1,)), cache)


def random_table(seed: int, vocab: int, sharpness: float = 1.5) -> jax.Array:
    return jnp.asarray(np.random.RandomState(seed).randn(vocab, vocab) * sharpness, jnp.float32)
