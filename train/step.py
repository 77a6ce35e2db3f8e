"""The jitted train and eval steps.

A loss function has the signature loss_fn(params, rows, key, frozen) ->
(loss, metrics): `rows` are packed token rows [B, T + 1], `key` is a fresh
PRNG key per micro-batch for stochastic objectives (the built-in ones are
deterministic), `frozen` holds arrays that are inputs but not trained (the
teacher's params when distilling; None otherwise). Passing the teacher as an
argument rather than closing over it keeps its weights out of the compiled
program's constants.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from models import CausalLM
from train.objectives import distill_loss, lm_loss

LossFn = Callable[[Any, jax.Array, jax.Array, Any], tuple[jax.Array, dict]]


def init_state(params, optimizer: optax.GradientTransformation, rng: jax.Array) -> dict:
    """Everything a resumed run needs besides the data position: one pytree, saved whole."""
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params), "rng": rng}


def lm_objective(model: CausalLM, z_loss: float) -> LossFn:
    def loss_fn(params, rows, key, frozen):
        del key, frozen  # deterministic, and nothing frozen
        return lm_loss(model.sequence_logits(params, rows[:, :-1]), rows[:, 1:], z_loss)

    return loss_fn


def distill_objective(
    draft: CausalLM, teacher: CausalLM, kl_weight: float, temperature: float, z_loss: float
) -> LossFn:
    def loss_fn(params, rows, key, teacher_params):
        del key
        inputs = rows[:, :-1]
        teacher_logits = teacher.sequence_logits(teacher_params, inputs)
        draft_logits = draft.sequence_logits(params, inputs)
        return distill_loss(draft_logits, teacher_logits, rows[:, 1:], kl_weight, temperature, z_loss)

    return loss_fn


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, schedule: optax.Schedule):
    """step(state, batch[accum, micro, T + 1], frozen) -> (state, metrics): one optimizer update.

    Gradients of the accum micro-batches are summed in a scan and divided by
    accum, so with equal-sized micro-batches the update equals that of one
    batch of accum · micro rows (up to float summation order).
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, batch, frozen):
        rng, step_key = jax.random.split(state["rng"])
        accum = batch.shape[0]
        keys = jax.random.split(step_key, accum)
        params = state["params"]

        def micro(total, xs):
            rows, key = xs
            (_, metrics), grads = grad_fn(params, rows, key, frozen)
            return jax.tree_util.tree_map(jnp.add, total, (grads, metrics)), None

        _, metrics_shape = jax.eval_shape(loss_fn, params, batch[0], keys[0], frozen)
        zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), (params, metrics_shape))
        (grads, metrics), _ = jax.lax.scan(micro, zeros, (batch, keys))
        grads, metrics = jax.tree_util.tree_map(lambda x: x / accum, (grads, metrics))
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["lr"] = schedule(state["step"])
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(params, updates),
            "opt_state": opt_state,
            "rng": rng,
        }
        return new_state, metrics

    return jax.jit(step)


def make_eval_step(loss_fn: LossFn):
    """eval(params, rows, frozen) -> metrics of one held-out batch."""

    def evaluate(params, rows, frozen):
        _, metrics = loss_fn(params, rows, jax.random.PRNGKey(0), frozen)
        return metrics

    return jax.jit(evaluate)
