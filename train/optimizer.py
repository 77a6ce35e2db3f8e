"""AdamW with linear warmup, cosine decay and global-norm clipping."""

from __future__ import annotations

import dataclasses

import jax
import optax

from train.errors import TrainingError


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the cosine ends at lr · min_lr_ratio
    warmup_steps: int = 100
    total_steps: int = 1000
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0


def make_schedule(c: OptimizerConfig) -> optax.Schedule:
    if c.total_steps < 1:
        raise TrainingError(f"steps must be at least 1, got {c.total_steps}")
    if not 0 <= c.warmup_steps < c.total_steps:
        raise TrainingError(f"warmup steps ({c.warmup_steps}) must be in [0, steps={c.total_steps})")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=c.lr,
        warmup_steps=c.warmup_steps,
        decay_steps=c.total_steps,
        end_value=c.lr * c.min_lr_ratio,
    )


def _decay_mask(params):
    # Decay matrices only; norm scales and biases are left alone, as is usual for transformers.
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(c: OptimizerConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(c.clip_norm),
        optax.adamw(make_schedule(c), b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=_decay_mask),
    )
