"""Training Kangaroo's exit adapter on a frozen target: the target's own distributions are the labels.

Each packed row runs through the frozen target twice: in full, for the
labels (its next-token distribution at every position), and through its
first E layers only, for h_E. The adapter (models/early_exit.py), attending
causally over the row, maps h_E to a state the target's head scores; it is
trained by cross-entropy against the full model's distribution at the same
position (the self-distillation Kangaroo trains with). Training starts from
the untrained adapter, which is plain early exit, so the first loss is
early exit's.

The metrics include acc, how often the adapter's top token is the target's,
and top_prob, the adapter's mean top probability (drafting stops below a
threshold of it). After training, the held-out acc is saved in the
adapter's config as its accuracy.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxspec.heads_io import save_heads
from models.early_exit import ExitAdapter, ExitDraftModel
from models.medusa import HeadsConfig


@dataclasses.dataclass(frozen=True)
class EarlyExitObjective:
    """The trainer's custom objective (train/trainer.py) for an adapter run: the trained params are the
    adapter's."""

    config: HeadsConfig
    target: str  # the target's path, for the run record
    name = "early-exit"

    @property
    def adapter(self) -> ExitAdapter:
        return ExitAdapter(self.config)

    def init_params(self, key):
        return self.adapter.init_params(key)

    def loss_fn(self, model, z_loss: float):
        """loss_fn(params, rows [B, L], key, target_params) -> (loss, metrics); `model` is the frozen target."""
        exit_model = ExitDraftModel(model, self.adapter)

        def loss_fn(params, rows, key, target_params):
            del key
            inputs = rows[:, :-1].astype(jnp.int32)
            b, t = inputs.shape
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            teacher = jax.lax.stop_gradient(model.forward(target_params, inputs, positions, model.init_cache(b, t)).logits)
            caches = exit_model.caches(model.init_cache(b, t), self.adapter.init_cache(b, t))
            logits = exit_model.forward({"target": target_params, "adapter": params}, inputs, positions, caches).logits
            log_q = jax.nn.log_softmax(logits, axis=-1)
            p = jax.nn.softmax(teacher, axis=-1)
            ce = -jnp.mean(jnp.sum(p * log_q, axis=-1))
            z = jnp.mean(jax.nn.logsumexp(logits, axis=-1) ** 2)
            loss = ce + z_loss * z
            agree = jnp.argmax(logits, axis=-1) == jnp.argmax(teacher, axis=-1)
            return loss, {"loss": loss, "ce": ce, "acc": jnp.mean(agree), "top_prob": jnp.mean(jnp.exp(log_q.max(-1)))}

        return loss_fn

    def export(self, out_dir, params, metrics: dict) -> None:
        """The adapter directory, with its held-out (else last) agreement with the target as its accuracy."""
        acc = float(metrics.get("eval_acc", metrics.get("acc", 0.0)))
        save_heads(out_dir, ExitAdapter(dataclasses.replace(self.config, accuracy=((acc,),))), params)
