"""``benchmarks/gpu_check.sh --cpu-smoke``: the GPU check runs end to end on CPU at tiny sizes.

The real check needs an accelerator; this runs the same script (install step skipped, JAX on
CPU) and checks the report it writes: every preset at both precisions with positive rates, and
the short end-to-end training run.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not (REPO / ".venv" / "bin" / "python").exists():  # the script falls back to python3
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu-smoke"]
        + ["--out", str(out), "--data-dir", str(tmp_path / "data")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert (out / "gpu_check.md").read_text().startswith("# GPU check")
    assert report["backend"] == "cpu"
    assert set(report["measured_matmul_peak_flops_per_sec"]) == {"fp32", "bf16"}

    rows = report["rows"]
    assert {(r["preset"].split("_")[0], r["precision"]) for r in rows} == {
        (f, p) for f in ("heatmap", "paf") for p in ("fp32", "bf16")
    }
    for row in rows:
        for key in ("images_per_sec", "flops_per_step", "achieved_flops_per_sec", "step_ms"):
            assert row[key] > 0, (row["preset"], row["precision"], key, row[key])
        assert 0 < row["mfu_measured_matmul"]
        assert "mfu_spec" in row  # None here: a CPU has no spec-sheet peak in the table

    training = report["training"]
    assert training["images_per_sec"] > 0
    assert training["final_metrics"]["train_steps"] == training["steps"]
    assert (Path(training["run_dir"]) / "final_metrics.json").exists()
