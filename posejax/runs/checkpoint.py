"""Orbax checkpoints of the train state together with the data iterator's position.

Orbax writes each step into a temporary directory (``<step>.orbax-checkpoint-tmp*``) and renames
it only once complete, so a run killed mid-write never leaves a checkpoint that looks finished
(the temporary directory is ignored). If the newest finished checkpoint still cannot be read (a
damaged disk, a truncated copy), the previous one is used with a warning.
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

    def restore_latest(
        self, target_state: Any, *, set_aside_unreadable: bool = False
    ) -> tuple[int, Any, Any] | None:
        """Newest readable checkpoint as ``(step, state, data_state)``, or None if there is none.

        ``target_state``: the tree to restore into (its shardings are where the arrays go), or
        None for the saved tree as nested dicts, on this process's first device.

        An unreadable checkpoint is skipped with a warning. With ``set_aside_unreadable`` (the
        trainer, which is about to write checkpoints again) it is also renamed to
        ``<step>.unreadable``: orbax never re-saves a step it lists, so a resumed run would
        otherwise keep the damaged checkpoint at that step, and fall back past it again.
        """
        steps = self.all_steps()
        for i, step in enumerate(reversed(steps)):
            try:
                target = self._on_this_host(step) if target_state is None else target_state
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target),
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
                if set_aside_unreadable:
                    self._set_aside(step)
                continue
            return step, restored.state, restored.data
        return None

    def _on_this_host(self, step: int) -> Any:
        """A restore target for the state saved at ``step``: its shapes and dtypes, every array
        on this process's first device. Without one, orbax would place the arrays as they were
        saved, which fails when the run trained on other devices (2 CPU devices with
        ``distributed.cpu_devices=cores``, a GPU node) than the process reading it."""
        handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
        reader = ocp.CheckpointManager(self.directory, item_handlers=handlers)
        try:
            metadata = reader.item_metadata(step)["state"]
        finally:
            reader.close()
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata
        )

    def _set_aside(self, step: int) -> None:
        path = self.directory / str(step)
        try:  # every host may try; one rename wins, the others find the directory gone
            path.rename(path.with_name(f"{step}.unreadable"))
        except OSError as err:
            if path.exists():
                log.warning("could not set aside unreadable checkpoint %s: %s", path, err)
        self._manager.reload()

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
