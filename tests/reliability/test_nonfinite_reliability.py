"""Numerical faults: a NaN loss or gradient stops the run naming the step and the offending term,
with the last good checkpoint intact; ``trainer.on_nonfinite=skip`` drops the step and goes on.

The fault is a bad example that got past the builders: in the batch of step 7 every labelled
keypoint's x is NaN (``reliability_worker.PoisonedIterator``). The formulation is coordinate
regression, whose two terms tell the culprit apart: the coordinate term becomes NaN, the
visibility term (from the flags only) stays finite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from reliability_worker import WORKER, read_rows, shared_data_dir, worker_env

from posejax.runs.checkpoint import Checkpointer

NAN_STEP = 7
pytestmark = pytest.mark.slow

RUN = [
    "data=synthetic_tiny",
    "backbone=tiny",
    "formulation=regression",
    "formulation.hidden_width=32",
    "trainer.steps=20",
    "trainer.batch_size=8",
    "trainer.log_every=5",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=5",
    "trainer.eval_images=8",
    "trainer.final_eval_images=8",
    "trainer.num_visualize=0",
    "trainer.tensorboard=false",
    "trainer.progress=false",
]


@pytest.fixture(scope="module")
def poisoned_runs(tmp_path_factory) -> dict[str, tuple[Path, dict, str]]:
    """Both policies, trained side by side: ``{policy: (run_dir, result, log)}``."""
    data_dir = shared_data_dir(tmp_path_factory.getbasetemp())
    base = tmp_path_factory.mktemp("nonfinite")
    procs = {}
    for policy in ("stop", "skip"):
        run_dir = base / policy
        command = [
            sys.executable,
            str(WORKER),
            "--run-dir",
            str(run_dir),
            "--out",
            str(base / f"{policy}.json"),
            "--nan-at-step",
            str(NAN_STEP),
            "--",
            *RUN,
            f"data.data_dir={data_dir}",
            f"trainer.on_nonfinite={policy}",
        ]
        log = open(base / f"{policy}.log", "w")  # noqa: SIM115 - closed below
        env = worker_env(compilation_cache=base / "jax_cache")
        procs[policy] = (run_dir, log, subprocess.Popen(command, env=env, stdout=log, stderr=log))
    runs = {}
    for policy, (run_dir, log, proc) in procs.items():
        code = proc.wait(timeout=300)
        log.close()
        text = (base / f"{policy}.log").read_text()
        assert code == 0, f"{policy} run exited with {code}:\n{text[-3000:]}"
        runs[policy] = (run_dir, json.loads((base / f"{policy}.json").read_text()), text)
    return runs


def test_stop_names_the_step_and_the_term(poisoned_runs):
    _, result, _ = poisoned_runs["stop"]
    assert result["error"] == "NonFiniteError"
    message = result["message"]
    assert message.startswith(f"non-finite value at step {NAN_STEP} in loss, grad_norm, ")
    assert "coord_stage1" in message and "visibility" not in message
    assert "last checkpoint is intact" in message and "on_nonfinite=skip" in message


def test_stop_leaves_the_last_good_checkpoint(poisoned_runs):
    run_dir, _, _ = poisoned_runs["stop"]
    # Stopped at the first logging point after step 7 (step 10), before its checkpoint.
    assert [row["step"] for row in read_rows(run_dir)] == [5]
    checkpointer = Checkpointer(run_dir / "checkpoints")
    assert checkpointer.all_steps() == [5]
    step, state, data_state = checkpointer.restore_latest(None)
    checkpointer.close()
    assert step == 5 and int(state["step"]) == 5 and data_state
    assert int(state["skipped_steps"]) == 0 and int(state["first_bad_step"]) == -1
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))
    assert not (run_dir / "final_metrics.json").exists()


def test_skip_drops_the_step_counts_it_and_finishes(poisoned_runs):
    run_dir, result, log = poisoned_runs["skip"]
    assert result["error"] is None
    rows = read_rows(run_dir)
    assert [row["step"] for row in rows] == [5, 10, 15, 20]
    assert [row["skipped_steps"] for row in rows] == [0, 1, 1, 1]
    for row in rows:  # the skipped step's NaN does not blank the logged means
        assert all(np.isfinite(row[k]) for k in ("loss", "grad_norm", "coord_stage1", "lr"))
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert log.count(f"non-finite value at step {NAN_STEP}") == 1  # warned once, not every row
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert np.isfinite(final["PCK@0.2"])
    checkpointer = Checkpointer(run_dir / "checkpoints")
    _, state, _ = checkpointer.restore_latest(None)
    checkpointer.close()
    assert int(state["skipped_steps"]) == 1 and int(state["first_bad_step"]) == NAN_STEP - 1
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))
