"""Training draft heads on a frozen target: the target's own distributions are the labels.

Each packed row runs through the frozen target once; at every position t the
heads read its final hidden state h_t (Hydra's heads also the row's own
tokens t + 1 .. t + 1 + k, teacher-forced, and Hydra++'s prefix layer the
hidden states before t: models/hydra.py), and head k is trained towards the
target's distribution at position t + 1 + k (its prediction of token t + 2 + k
given the true text), by cross-entropy against those soft labels (the
self-distillation of Medusa-2 and of the Hydra recipe; with a reduced draft
vocabulary the labels are restricted to it and renormalised). Positions whose
label would fall past the row are masked.

The metrics include acc_k_r, how often the target's greedy token is head k's
rank-r guess; after training, their held-out values are saved in the heads'
config as the accuracies the static tree is grown from (jaxspec/static_tree.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.heads_io import KINDS, save_heads
from models.medusa import HeadsConfig

MEASURED_RANKS = 4  # accuracies kept per head: ranks 0 .. 3 feed the tree builder


def most_frequent_ids(rows: np.ndarray, n: int, vocab_size: int) -> tuple[int, ...]:
    """The n most frequent token ids of the training rows (ties to the smaller id), sorted."""
    counts = np.bincount(np.asarray(rows).ravel().astype(np.int64), minlength=vocab_size)[:vocab_size]
    order = np.lexsort((np.arange(vocab_size), -counts))
    return tuple(sorted(int(i) for i in order[:n]))


@dataclasses.dataclass(frozen=True)
class HeadsObjective:
    """The trainer's custom objective (train/trainer.py) for a heads run: the trained params are the heads'."""

    config: HeadsConfig
    target: str  # the target's path, for the run record
    draft_ids: tuple[int, ...] | None = None
    name = "heads"

    @property
    def heads(self):
        return KINDS[self.config.kind](self.config)

    def init_params(self, key):
        return self.heads.init_params(key)

    def loss_fn(self, model, z_loss: float):
        """loss_fn(params, rows [B, L], key, target_params) -> (loss, metrics); `model` is the frozen target."""
        heads, k_heads = self.heads, self.config.num_heads
        ids = None if self.draft_ids is None else jnp.asarray(self.draft_ids, jnp.int32)

        def loss_fn(params, rows, key, target_params):
            del key
            inputs = rows[:, :-1].astype(jnp.int32)
            b, t = inputs.shape
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            table = jax.lax.stop_gradient(model.output_embedding(target_params))
            if ids is None:
                out = model.forward(target_params, inputs, positions, model.init_cache(b, t))
                rows = table
            else:
                # The labels are renormalised over the subset, so the target scores its N rows only: for a
                # large vocabulary (Gemma 3: 262,144 rows) the full head is most of the target's forward.
                subset = jnp.broadcast_to(ids, (b, ids.shape[0]))
                out = model.forward(target_params, inputs, positions, model.init_cache(b, t), vocab=subset)
                rows = table[ids]
            hidden, teacher = jax.lax.stop_gradient(out.hidden), jax.lax.stop_gradient(out.logits)
            logits = heads.training_logits(params, hidden, inputs, table, rows)  # [B, T, K, N]
            total, metrics = 0.0, {}
            for k in range(k_heads):
                span = t - 1 - k  # positions whose label t + 1 + k lies inside the row
                if span <= 0:
                    continue
                log_q = jax.nn.log_softmax(logits[:, :span, k], axis=-1)
                labels = teacher[:, 1 + k : 1 + k + span]
                p = jax.nn.softmax(labels, axis=-1)
                ce = -jnp.mean(jnp.sum(p * log_q, axis=-1))
                z = jnp.mean(jax.nn.logsumexp(logits[:, :span, k], axis=-1) ** 2)
                total = total + ce + z_loss * z
                metrics[f"ce_{k}"] = ce
                # The rank of the target's greedy token among head k's guesses.
                greedy = jnp.argmax(labels, axis=-1)
                score = jnp.take_along_axis(logits[:, :span, k], greedy[..., None], axis=-1)
                rank = jnp.sum(logits[:, :span, k] > score, axis=-1)
                for r in range(MEASURED_RANKS):
                    metrics[f"acc_{k}_{r}"] = jnp.mean(rank == r)
            loss = total / k_heads
            return loss, {"loss": loss, **metrics}

        return loss_fn

    def measured_accuracy(self, metrics: dict) -> tuple[tuple[float, ...], ...]:
        """accuracy[k][r] from held-out metrics (eval_acc_k_r), else the last train step's."""
        prefix = "eval_" if any(k.startswith("eval_acc_") for k in metrics) else ""
        return tuple(
            tuple(float(metrics.get(f"{prefix}acc_{k}_{r}", 0.0)) for r in range(MEASURED_RANKS))
            for k in range(self.config.num_heads)
        )

    def export(self, out_dir, params, metrics: dict) -> None:
        """The heads directory, with the measured accuracies its static tree is grown from."""
        config = dataclasses.replace(self.config, accuracy=self.measured_accuracy(metrics))
        save_heads(out_dir, KINDS[config.kind](config), params, self.draft_ids)
