"""Orbax checkpoints of the train state together with the data iterator's position.

Orbax writes each step into a temporary directory and renames it only once complete, so a run
killed mid-write never leaves a checkpoint that looks finished. If the newest finished
checkpoint still cannot be read (a damaged disk, a truncated copy), the previous one is used with
a warning.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    """Saves ``{"state": TrainState pytree, "data": iterator state}`` every N steps."""

    def __init__(self, directory: str | Path, *, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(_jsonable(data_state)),
            ),
        )

    def restore_latest(self, target_state: Any) -> tuple[int, Any, Any] | None:
        """Newest readable checkpoint as ``(step, state, data_state)``, or None if there is none."""
        steps = self.all_steps()
        for i, step in enumerate(reversed(steps)):
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target_state),
                        data=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint falls back
                older = steps[-2 - i] if i + 1 < len(steps) else None
                warnings.warn(
                    f"checkpoint at step {step} in {self.directory} is unreadable "
                    f"({type(err).__name__}: {err}); "
                    + (f"falling back to step {older}" if older is not None else "starting over"),
                    stacklevel=2,
                )
                continue
            return step, restored.state, restored.data
        return None

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _jsonable(data_state: Any) -> Any:
    """Grain iterator states are dicts of ints/strings; make sure they survive JSON."""
    state = jax.tree.map(lambda x: x.item() if hasattr(x, "item") else x, data_state)
    json.dumps(state)  # fail here, at save time, rather than at restore time
    return state
