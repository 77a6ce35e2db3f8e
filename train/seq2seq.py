"""The prefix-LM objective for encoder-decoder models (T5Gemma's adaptation recipe).

Each packed row of L = T + 1 tokens splits at a point k drawn per row from
[min_prefix · L, max_prefix · L]: the encoder reads row[:k], and the decoder,
teacher-forced from [start] + row[k:-1], predicts row[k:]. Shapes stay static
whatever k is: the source is the first `hi` tokens with its length k (the
rest masked), the target the last L - lo tokens shifted to start at k (the
tail past the row masked). Eval uses a fixed key, so its splits never change.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from train.errors import TrainingError
from train.objectives import cross_entropy


@dataclasses.dataclass(frozen=True)
class PrefixLM:
    min_prefix: float = 0.25
    max_prefix: float = 0.75
    name = "prefix-lm"

    def __post_init__(self):
        if not 0.0 < self.min_prefix <= self.max_prefix < 1.0:
            raise TrainingError(f"prefix fractions must satisfy 0 < min <= max < 1, got {self.min_prefix}, {self.max_prefix}")

    def split_bounds(self, row_len: int) -> tuple[int, int]:
        """The smallest and largest source length for rows of row_len tokens (each side keeps >= 1 token)."""
        lo = min(max(1, int(self.min_prefix * row_len)), row_len - 1)
        return lo, min(max(lo, int(self.max_prefix * row_len)), row_len - 1)

    def loss_fn(self, model, z_loss: float):
        """loss_fn(params, rows [B, L], key, frozen) -> (loss, metrics), the trainer's LossFn (train/step.py)."""
        if not model.is_encoder_decoder:
            raise TrainingError("the prefix-lm objective trains encoder-decoder models")
        start_token = model.config.decoder_start_token_id

        def loss_fn(params, rows, key, frozen):
            del frozen
            rows = rows.astype(jnp.int32)
            b, length = rows.shape
            lo, hi = self.split_bounds(length)
            k = jax.random.randint(key, (b,), lo, hi + 1)
            index = k[:, None] + jnp.arange(length - lo)[None, :]
            valid = index < length
            target = jnp.take_along_axis(rows, jnp.minimum(index, length - 1), axis=1)
            decoder_in = jnp.concatenate([jnp.full((b, 1), start_token, jnp.int32), target[:, :-1]], axis=1)
            logits = model.sequence_logits(params, decoder_in, rows[:, :hi], k)
            ce, log_z = cross_entropy(logits, target)
            n = jnp.sum(valid)
            ce = jnp.sum(ce * valid) / n
            z = jnp.sum(log_z**2 * valid) / n
            loss = ce + z_loss * z
            return loss, {"loss": loss, "ce": ce, "z": z}

        return loss_fn
