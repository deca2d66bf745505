"""Training runs in fresh interpreters for the reliability tests (not a test module).

As a script::

    python tests/reliability/reliability_worker.py --run-dir D --out F.json \
        [--nan-at-step N] -- [hydra overrides]

trains with ``posejax.train.loop.train``; with ``--nan-at-step N`` the x coordinates of every
labelled keypoint in the batch of step ``N`` (1-based, as in ``metrics.jsonl``) are NaN, a bad
example that got past the builders. It writes ``{"error": type name or null, "message": ...}``
to ``F.json``; a ``NonFiniteError`` is caught and reported there, anything else propagates.

The test side (:func:`cli_command`, :func:`worker_env`, :func:`shared_data_dir`) runs the real
``python -m posejax.train`` command line with small settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).resolve()
REPO = WORKER.parents[2]
CONF_DIR = REPO / "conf"

# 40 steps of the tiny backbone; a checkpoint every 10, a row every 5, validation at 20 and 40.
TINY_RUN = [
    "data=synthetic_tiny",
    "backbone=tiny",
    "trainer.steps=40",
    "trainer.batch_size=8",
    "trainer.log_every=5",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=10",
    "trainer.eval_images=8",
    "trainer.final_eval_images=8",
    "trainer.num_visualize=0",
    "trainer.tensorboard=false",
    "trainer.progress=false",
]
# Keys of metrics.jsonl that measure time, not training.
TIMING_KEYS = {"images_per_sec", "val/ms_per_image", "train_seconds"}


def worker_env(compilation_cache: Path | None = None) -> dict[str, str]:
    """CPU, fast compiles, and optionally a compilation cache shared by the runs of one test
    (later runs load the executables of the first instead of compiling them again)."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    # XLA's CPU compiles are most of a small run's time; level 0 makes them several times faster.
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    env.pop("HYDRA_FULL_ERROR", None)
    if compilation_cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def cli_command(run_dir: Path, data_dir: Path, *overrides: str) -> list[str]:
    """The training command line a user would type (re-running it resumes ``run_dir``)."""
    return [
        sys.executable,
        "-m",
        "posejax.train",
        *TINY_RUN,
        f"data.data_dir={data_dir}",
        f"run_dir={run_dir}",
        *overrides,
    ]


def shared_data_dir(base: Path) -> Path:
    """``base / "data"`` with the ``synthetic_tiny`` dataset built (once per pytest session; the
    same directory ``tests/train`` uses), so that concurrent runs only read it."""
    from hydra import compose, initialize_config_dir

    from posejax.data.splits import open_split
    from posejax.runs.setup import check_config

    data_dir = base / "data"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY_RUN, f"data.data_dir={data_dir}"])
    data = check_config(cfg, num_devices=1).data
    open_split(data, data.train_split)
    return data_dir


def read_rows(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- worker side


class PoisonedIterator:
    """Wraps a training iterator; the ``at``-th batch it yields gets NaN x coordinates."""

    def __init__(self, iterator, at: int):
        self._iterator, self._at, self._count = iterator, at, 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._iterator)
        self._count += 1
        if self._count == self._at:
            keypoints = batch["keypoints"].copy()
            keypoints[..., 0][keypoints[..., 2] > 0] = np.nan
            batch = {**batch, "keypoints": keypoints}
        return batch

    def get_state(self):
        return self._iterator.get_state()

    def set_state(self, state):
        self._iterator.set_state(state)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--nan-at-step", type=int, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)

    from hydra import compose, initialize_config_dir

    from posejax.train import loop

    if args.nan_at_step is not None:
        make = loop.make_train_iterator
        loop.make_train_iterator = lambda *a, **k: PoisonedIterator(make(*a, **k), args.nan_at_step)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    result = {"error": None, "message": None}
    try:
        loop.train(cfg, Path(args.run_dir))
    except loop.NonFiniteError as err:
        result = {"error": type(err).__name__, "message": str(err)}
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
