"""``benchmarks/bench_loop.py`` end to end at tiny sizes: the training run's rows, the step
before and after it, and the report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_loop_reports_the_loop_against_the_step(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "POSEJAX_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_loop.py"), "--presets", "regression"]
        + ["--windows", "2", "--window-seconds", "0.01", "--batches", "2", "--out", str(out)]
        + ["data=synthetic_tiny", "backbone=tiny", "trainer.batch_size=8"]
        + ["trainer.tensorboard=false", "trainer.num_visualize=0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "bench_loop.json").read_text())
    (row,) = report["rows"]
    assert row["formulation"] == "regression" and row["experiment"] == "e1_quick"
    assert row["batch_size"] == 8 and row["loop_window_steps"] == 5  # the minimum window
    assert len(row["loop_images_per_sec_rows"]) == 2  # 3 rows logged, the first dropped
    for key in ("pipeline_images_per_sec", "step_images_per_sec_before", "loop_images_per_sec"):
        assert row[key] > 0, key
    step = (row["step_images_per_sec_before"] + row["step_images_per_sec_after"]) / 2
    assert row["loop_over_step"] == pytest.approx(row["loop_images_per_sec"] / step)
    assert "| regression | e1_quick |" in (out / "bench_loop.md").read_text()
