"""The jitted train and eval steps.

A loss function has the signature loss_fn(params, rows, key, frozen) ->
(loss, metrics): `rows` are packed token rows [B, T + 1], `key` is a fresh
PRNG key per micro-batch for stochastic objectives (the built-in ones are
deterministic), `frozen` holds arrays that are inputs but not trained (the
teacher's params when distilling; None otherwise). Passing the teacher as an
argument rather than closing over it keeps its weights out of the compiled
program's constants.

On a mesh the steps are jitted with the in/out shardings of `StepShardings`
(made by train.placement.OnMesh), so the state leaves a step laid out as it
came in and the metrics come back replicated, readable on every process.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from models import CausalLM
from train.objectives import distill_loss, lm_loss

LossFn = Callable[[Any, jax.Array, jax.Array, Any], tuple[jax.Array, dict]]


class StepShardings(NamedTuple):
    state: Any  # a tree of NamedSharding matching the train state
    batch: NamedSharding  # train batches [accum, micro, T + 1]
    eval_batch: NamedSharding  # held-out batches [micro, T + 1]
    frozen: Any  # the teacher's param shardings, or None
    replicated: NamedSharding


def init_state(params, optimizer: optax.GradientTransformation, rng: jax.Array) -> dict:
    """Everything a resumed run needs besides the data position: one pytree, saved whole."""
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params), "rng": rng}


def lm_objective(model: CausalLM, z_loss: float) -> LossFn:
    """The causal LM loss; a model with `training_logits` (HAT: a word budget per row) says which positions
    its training forward scores."""

    def loss_fn(params, rows, key, frozen):
        del key, frozen  # deterministic, and nothing frozen
        if hasattr(model, "training_logits"):
            logits, weights = model.training_logits(params, rows[:, :-1])
            return lm_loss(logits, rows[:, 1:], z_loss, weights)
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


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    shardings: StepShardings | None = None,
):
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
        if shardings is not None:  # the summed gradients are sharded like the params, not gathered whole
            zeros = (jax.lax.with_sharding_constraint(zeros[0], shardings.state["params"]), zeros[1])
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

    if shardings is None:
        return jax.jit(step)
    return jax.jit(
        step,
        in_shardings=(shardings.state, shardings.batch, shardings.frozen),
        out_shardings=(shardings.state, shardings.replicated),
    )


def make_eval_step(loss_fn: LossFn, shardings: StepShardings | None = None):
    """eval(params, rows, frozen) -> metrics of one held-out batch."""

    def evaluate(params, rows, frozen):
        _, metrics = loss_fn(params, rows, jax.random.PRNGKey(0), frozen)
        return metrics

    if shardings is None:
        return jax.jit(evaluate)
    return jax.jit(
        evaluate,
        in_shardings=(shardings.state["params"], shardings.eval_batch, shardings.frozen),
        out_shardings=shardings.replicated,
    )
