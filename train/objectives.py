"""Training losses. Each takes logits [B, T, V] (float32) and returns (loss, metrics).

Metrics are means over the batch's tokens, so averaging them over equal-sized
micro-batches gives the metric of the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-token cross-entropy and log-partition log Z, both [B, T]."""
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return log_z - target_logit, log_z


def lm_loss(logits: jax.Array, targets: jax.Array, z_loss: float, weights: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Causal LM cross-entropy, plus z_loss · mean(log Z²) which keeps the softmax normaliser near 1; means
    over the positions `weights` [B, T] keeps (all by default)."""
    ce, log_z = cross_entropy(logits, targets)
    weights = jnp.ones_like(ce) if weights is None else weights.astype(ce.dtype)
    count = jnp.maximum(weights.sum(), 1.0)
    ce = jnp.sum(ce * weights) / count
    z = jnp.sum(log_z**2 * weights) / count
    loss = ce + z_loss * z
    return loss, {"loss": loss, "ce": ce, "z": z}


def distill_loss(
    draft_logits: jax.Array,
    teacher_logits: jax.Array,
    targets: jax.Array,
    kl_weight: float,
    temperature: float,
    z_loss: float,
) -> tuple[jax.Array, dict]:
    """kl_weight · KL(teacher ‖ draft) + (1 − kl_weight) · CE(draft, data), plus the z-loss.

    KL(teacher ‖ draft) is the forward KL on the teacher's distribution: the
    draft is pushed to put mass wherever the teacher does, which is what raises
    speculative acceptance. With a temperature τ both distributions are
    softened and the KL is scaled by τ² so its gradients keep their size.
    """
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
    log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    log_q = jax.nn.log_softmax(draft_logits / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1).mean() * temperature**2
    ce, log_z = cross_entropy(draft_logits, targets)
    ce = ce.mean()
    z = jnp.mean(log_z**2)
    loss = kl_weight * kl + (1.0 - kl_weight) * ce + z_loss * z
    agree = jnp.mean(jnp.argmax(draft_logits, -1) == jnp.argmax(teacher_logits, -1))
    return loss, {"loss": loss, "ce": ce, "kl": kl, "z": z, "agreement": agree}
