"""Killed runs: ``kill -9``, re-run the same command, and end exactly where an uninterrupted run
ends (every ``metrics.jsonl`` value except timings). Plus the checkpoint edge cases a kill or a
damaged disk leaves behind: an interrupted write, an unreadable latest checkpoint, a cut line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from reliability_worker import (
    TIMING_KEYS,
    cli_command,
    read_rows,
    shared_data_dir,
    worker_env,
)

from posejax.runs.checkpoint import Checkpointer
from posejax.train.metrics_writer import MetricWriter

REPO = Path(__file__).resolve().parents[2]


def _start(command: list[str], log: Path) -> subprocess.Popen:
    env = worker_env(compilation_cache=log.parent / "jax_cache")
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    try:
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    tail = "\n".join(log.read_text().splitlines()[-30:])
    assert code == 0, f"training exited with {code}:\n{tail}"


def _row_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass
    return steps


@pytest.mark.slow
def test_sigkill_then_rerun_ends_with_the_uninterrupted_metrics(tmp_path, tmp_path_factory):
    data_dir = shared_data_dir(tmp_path_factory.getbasetemp())
    reference_dir, victim_dir = tmp_path / "reference", tmp_path / "victim"
    victim_log = tmp_path / "victim.log"
    victim = _start(cli_command(victim_dir, data_dir), victim_log)

    # Kill between checkpoints: after checkpoint 10 and the row of step 15 exist, i.e. with
    # rows on disk that the resumed run must drop and write again.
    checkpoint = victim_dir / "checkpoints" / "10"
    deadline = time.monotonic() + 180
    while not (checkpoint.is_dir() and max(_row_steps(victim_dir), default=0) >= 15):
        assert victim.poll() is None, (
            "the run ended before it could be killed:\n" + (victim_log.read_text()[-3000:])
        )
        assert time.monotonic() < deadline, "no checkpoint at step 10 after 180 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (victim_dir / "final_metrics.json").exists()
    killed_at = max(_row_steps(victim_dir))

    # What a kill during a checkpoint write leaves: orbax's temporary directory of a later step.
    partial = victim_dir / "checkpoints" / "30.orbax-checkpoint-tmp-1700000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "_METADATA").write_text("{")

    # The same command again, and beside it an uninterrupted run of the same configuration.
    resumed_log, reference_log = tmp_path / "resumed.log", tmp_path / "reference.log"
    resumed = _start(cli_command(victim_dir, data_dir), resumed_log)
    reference = _start(cli_command(reference_dir, data_dir), reference_log)
    _finish(resumed, resumed_log)
    _finish(reference, reference_log)

    log = resumed_log.read_text()
    resumed = [
        line.split("resumed from step ")[1] for line in log.splitlines() if "resumed" in line
    ]
    assert resumed and int(resumed[0].split()[0]) in (10, 20, 30), log[-3000:]
    assert killed_at >= 15

    want, got = read_rows(reference_dir), read_rows(victim_dir)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(5, 45, 5))
    for w, g in zip(want, got, strict=True):
        assert set(g) == set(w), g["step"]
        for key in sorted(set(w) - TIMING_KEYS):
            assert g[key] == w[key], (g["step"], key, g[key], w[key])
    assert any(k.startswith("val/") for k in got[-1]) and "loss" in got[-1] and "lr" in got[-1]
    final = json.loads((victim_dir / "final_metrics.json").read_text())
    assert (
        final["PCK@0.2"]
        == json.loads((reference_dir / "final_metrics.json").read_text())["PCK@0.2"]
    )


# --------------------------------------------------------------------------- checkpoints


def _state(value: float) -> dict:
    return {"w": jnp.full((3,), value), "step": jnp.asarray(int(value))}


def _save_steps(directory: Path, steps: list[int]) -> None:
    checkpointer = Checkpointer(directory, max_to_keep=5)
    for step in steps:
        checkpointer.save(step, _state(float(step)), {"position": step})
    checkpointer.close()


def _restore(directory: Path, **kwargs):
    checkpointer = Checkpointer(directory, max_to_keep=5)
    try:
        return checkpointer.restore_latest(_state(0.0), **kwargs), checkpointer.all_steps()
    finally:
        checkpointer.close()


def test_a_checkpoint_interrupted_mid_write_is_never_picked_up(tmp_path):
    _save_steps(tmp_path, [10, 20])
    for name in ("30.orbax-checkpoint-tmp-1700000000", "40.orbax-checkpoint-tmp"):
        (tmp_path / name / "state").mkdir(parents=True)  # what a kill mid-save leaves
    (step, state, data), steps = _restore(tmp_path)
    assert steps == [10, 20] and step == 20 and data == {"position": 20}
    np.testing.assert_array_equal(state["w"], 20.0)


@pytest.mark.parametrize(
    "damage",
    ["state/_METADATA", "state/manifest.ocdbt", "data/metadata", "array chunks"],
)
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    _save_steps(tmp_path, [10, 20])
    latest = tmp_path / "20"
    files = (
        [p for p in latest.glob("state/**/d/*") if p.is_file()]
        if damage == "array chunks"
        else [latest / damage]
    )
    assert files and all(f.is_file() for f in files)
    for f in files:
        f.write_bytes(b"\xff" * 16)
    with pytest.warns(UserWarning, match="step 20 .* unreadable .* falling back to step 10"):
        (step, state, data), steps = _restore(tmp_path)
    assert step == 10 and data == {"position": 10} and steps == [10, 20]
    np.testing.assert_array_equal(state["w"], 10.0)


def test_the_trainer_sets_an_unreadable_checkpoint_aside_so_the_step_is_saved_again(tmp_path):
    _save_steps(tmp_path, [10, 20])
    (tmp_path / "20" / "state" / "_METADATA").write_text("garbage")
    checkpointer = Checkpointer(tmp_path)
    with pytest.warns(UserWarning, match="unreadable"):
        step, _, _ = checkpointer.restore_latest(_state(0.0), set_aside_unreadable=True)
    assert step == 10 and checkpointer.all_steps() == [10]
    assert (tmp_path / "20.unreadable").is_dir()
    # The resumed run reaches step 20 again and its checkpoint is written and readable.
    checkpointer.save(20, _state(21.0), {"position": 21})
    checkpointer.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (step, state, data), steps = _restore(tmp_path)
    assert step == 20 and data == {"position": 21} and steps == [10, 20]
    np.testing.assert_array_equal(state["w"], 21.0)


def test_no_readable_checkpoint_starts_over(tmp_path):
    _save_steps(tmp_path, [10])
    (tmp_path / "10" / "state" / "_METADATA").write_text("")
    with pytest.warns(UserWarning, match="starting over"):
        restored, _ = _restore(tmp_path)
    assert restored is None


def test_resumed_metrics_keep_only_complete_rows_up_to_the_checkpoint(tmp_path):
    rows = [json.dumps({"step": s, "loss": float(s)}) for s in (5, 10, 15, 20)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(rows) + '\n{"step": 25, "lo')
    writer = MetricWriter(tmp_path, resume_step=10, tensorboard=False)
    writer.write(15, {"loss": 1.5, "bad": float("nan")})
    writer.close()
    assert read_rows(tmp_path) == [
        {"step": 5, "loss": 5.0},
        {"step": 10, "loss": 10.0},
        {"step": 15, "loss": 1.5, "bad": None},
    ]
    assert not (tmp_path / "metrics.jsonl.tmp").exists()
