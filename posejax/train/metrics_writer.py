"""Metrics to ``metrics.jsonl`` (one JSON object per logged step) and to TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


class MetricWriter:
    """Appends scalars per step to ``<run_dir>/metrics.jsonl`` and a TensorBoard event file.

    On resume from step ``s`` the JSONL keeps only rows with ``step <= s``, so a run killed after
    its last checkpoint ends with exactly the rows an uninterrupted run would have written.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        resume_step: int | None,
        tensorboard: bool = True,
        enabled: bool = True,
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill mid-write
                if row.get("step", math.inf) <= resume_step:
                    kept.append(line)
        # Atomic: a kill during this rewrite must not lose the rows that are being kept.
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        tmp.replace(self.path)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        row.update({k: _to_float(v) for k, v in scalars.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and value is not None and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _to_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(np.asarray(value))
    return value if math.isfinite(value) else None  # JSON has no NaN/inf; null says 'undefined'


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``, in file order; a line cut by a kill is skipped.

    Raises:
      FileNotFoundError: the run directory has no ``metrics.jsonl``.
    """
    rows = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write (or a blank line)
    return rows
