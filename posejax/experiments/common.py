"""Pieces shared by the experiment tools (``paf_stages``, ``matching``, ``runtime``).

Each tool takes a finished run directory, measures one thing several ways and writes a table in
the summariser's format (:func:`posejax.experiments.summarize.write_table`), so every result
folder under ``experiments/`` reads the same.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np


class MemoisedPredict:
    """``images -> outputs`` that runs the network once per distinct batch of images.

    Decoding the same network outputs several ways (per refinement stage, per matcher) then
    costs one forward pass per batch, and every decoder provably sees identical outputs. Outputs
    are kept on the host, keyed by a digest of the image bytes.

    Args:
      predict: ``images (B, h, w, 3) uint8 -> outputs`` (e.g.
        :func:`posejax.runs.state.jitted_predict`).
    """

    def __init__(self, predict: Callable[[np.ndarray], Any]):
        self.predict = predict
        self.cache: dict[bytes, Any] = {}
        self.calls = 0  # forward passes actually run

    def __call__(self, images: np.ndarray) -> Any:
        images = np.ascontiguousarray(images)
        key = (
            hashlib.blake2b(images.tobytes(), digest_size=16).digest() + repr(images.shape).encode()
        )
        if key not in self.cache:
            self.cache[key] = jax.device_get(jax.block_until_ready(self.predict(images)))
            self.calls += 1
        return self.cache[key]


def restore_predict(run_dir: str | Path, *, overrides: dict | None = None):
    """A run's newest checkpoint as ``(setup, predict, step)``; ``predict`` is jitted."""
    from posejax.runs.directory import restore_run
    from posejax.runs.state import jitted_predict

    setup, model_def, params, step = restore_run(run_dir, overrides=overrides)
    return setup, jitted_predict(model_def, params), step


def metric_row(label: str, varied: dict[str, Any], metrics: dict[str, float]) -> dict:
    """One row in the layout of :func:`posejax.experiments.summarize.collect`."""
    return {
        "run": label,
        "overrides": {k: str(v) for k, v in varied.items()},
        "metrics": {k: float(v) for k, v in metrics.items()},
    }


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command a tool was run with, for the "command" line of its table."""
    return f"python -m {module} " + shlex.join(sys.argv[1:] if argv is None else list(argv))
