"""Loss curves from metrics.jsonl files: train loss (smoothed) and eval loss per run, on one figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.errors import TrainingError
from train.metrics import read_metrics

_SMOOTH = 25  # steps in the train-loss moving average


def _moving_average(values: np.ndarray, width: int) -> np.ndarray:
    width = max(1, min(width, len(values)))
    return np.convolve(values, np.ones(width) / width, mode="valid")


def plot_losses(runs: list[tuple[Path, str]], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TrainingError("plotting needs matplotlib (pip install 'jaxspec[bench]')") from None
    fig, ax = plt.subplots(figsize=(8, 5))
    for path, label in runs:
        records = read_metrics(path)
        train = [(r["step"], r["ce"]) for r in records if "ce" in r]
        evals = [(r["step"], r["eval_ce"]) for r in records if "eval_ce" in r]
        if not train:
            raise TrainingError(f"{path}: no train-loss records")
        steps, ce = np.array(train).T
        smooth = _moving_average(ce, _SMOOTH)
        line, = ax.plot(steps[len(steps) - len(smooth):], smooth, label=f"{label} train CE")
        if evals:
            es, ev = np.array(evals).T
            ax.plot(es, ev, "o--", color=line.get_color(), label=f"{label} held-out CE")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
