"""Orbax checkpoints of a training run: the state pytree plus a small JSON of host-side state.

Orbax writes each step into `<step>.orbax-checkpoint-tmp-*` and renames it to
`<step>` only once complete, so a run killed mid-save leaves the previous
checkpoints as they were; the leftover temporary folder is removed when the
manager next opens the directory. Saves are asynchronous: the arrays are copied
off the training state when `save` is called and written in the background.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from train.errors import TrainingError

# Orbax logs every save at INFO through absl; a training log wants one line per event, not dozens.
logging.getLogger("absl").setLevel(logging.WARNING)


class Checkpoints:
    def __init__(self, directory: Path, save_every: int, keep: int):
        if save_every < 1 or keep < 1:
            raise TrainingError(f"save-every and keep must be at least 1 (got {save_every}, {keep})")
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_every,
            max_to_keep=keep,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: dict, meta: dict, force: bool = False) -> bool:
        """Saves when `step` is due (every save_every steps) or when forced; returns whether it did."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        return self._manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state: dict) -> tuple[dict, dict]:
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
        try:
            restored = self._manager.restore(step, args=args)
        except Exception as e:  # orbax and tensorstore raise many types for unreadable data
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TrainingError(
                f"{self.directory / str(step)}: corrupted checkpoint ({reason}); "
                "delete that folder to resume from an earlier one"
            ) from None
        state, meta = restored["state"], restored["meta"]
        want = jax.tree_util.tree_structure(abstract_state)
        if jax.tree_util.tree_structure(state) != want or not isinstance(meta, dict):
            raise TrainingError(f"{self.directory / str(step)}: checkpoint does not match this run's model")
        return state, meta

    def close(self) -> None:
        """Waits for pending saves to be on disk."""
        self._manager.wait_until_finished()
        self._manager.close()
