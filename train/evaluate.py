"""Held-out metrics: means over fixed batches, during training and for any saved model."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from jaxspec.loading import load
from train.dataset import eval_batches, open_dataset
from train.errors import TrainingError
from train.step import distill_objective, lm_objective, make_eval_step


def mean_metrics(eval_step, params, batches: list, frozen) -> dict:
    """Averages per-batch metrics over equal-sized batches, prefixing each name with eval_."""
    sums: dict = {}
    for rows in batches:
        for k, v in jax.device_get(eval_step(params, rows, frozen)).items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {f"eval_{k}": v / len(batches) for k, v in sums.items()}


def evaluate_saved(model_dir: Path, data_dir: Path, teacher_dir: Path | None, batch_rows: int, max_batches: int) -> dict:
    """Held-out cross-entropy of a saved model; with a teacher also KL(teacher ‖ model) and argmax agreement."""
    data = open_dataset(data_dir)
    model = load(model_dir, dtype="float32")
    if model.model.vocab_size < data.vocab_size:
        raise TrainingError(f"{model_dir}: vocabulary of {model.model.vocab_size} is smaller than the data's {data.vocab_size}")
    batches = [jnp.asarray(b, jnp.int32) for b in eval_batches(data.eval, batch_rows, max_batches)]
    if not batches:
        raise TrainingError(f"{data_dir}: fewer than {batch_rows} held-out rows")
    if teacher_dir is None:
        loss_fn, frozen = lm_objective(model.model, 0.0), None
    else:
        teacher = load(teacher_dir, dtype="float32")
        if teacher.model.vocab_size != model.model.vocab_size:
            raise TrainingError(f"{teacher_dir}: vocabulary differs from {model_dir}'s")
        loss_fn, frozen = distill_objective(model.model, teacher.model, 1.0, 1.0, 0.0), teacher.params
    result = mean_metrics(make_eval_step(loss_fn), model.params, batches, frozen)
    return {"model": str(model_dir), "params": model.num_params, "eval_tokens": len(batches) * batch_rows * data.seq_len, **result}
