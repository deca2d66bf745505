"""The notebooks run end to end against a tiny sweep, and their committed forms are in sync.

Each notebook is kept as a jupytext percent script (``notebooks/<name>.py``, the source of truth)
paired with an ``.ipynb`` holding the outputs of one run on the committed quick comparison
(``make notebooks``). The sweep is built once per module: a Hydra multirun of
two formulations (one top-down, one bottom-up) on the tiny synthetic dataset with the tiny
backbone, a few steps each; the notebooks find it through ``POSEJAX_RUNS``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[!_]*.py"))  # _execute.py is `make notebooks`
KERNEL = "posejax-tests"


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """``<tmp>/sweep/{heatmap,paf,mean_pose}``: two tiny runs of one multirun and a baseline."""
    tmp = tmp_path_factory.mktemp("notebooks")
    sweep = tmp / "sweep"
    command = [
        sys.executable,
        "-m",
        "posejax.train",
        "-m",
        "data=synthetic_tiny",
        "backbone=tiny",
        "formulation=heatmap,paf",
        "trainer.steps=4",
        "trainer.batch_size=8",
        "trainer.log_every=2",
        "trainer.eval_every=4",
        "trainer.checkpoint_every=4",
        "trainer.eval_images=8",
        "trainer.final_eval_images=8",
        "trainer.num_visualize=2",
        "trainer.progress=false",
        "trainer.tensorboard=false",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra:runtime.choices.formulation}",
    ]
    env = {**os.environ, "POSEJAX_DATA_DIR": str(tmp / "data"), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.parent.name for p in sweep.glob("*/final_metrics.json")) == ["heatmap", "paf"]
    # Like the mean-pose baseline of `make compare`: final metrics only, no training run.
    (sweep / "mean_pose").mkdir()
    (sweep / "mean_pose" / "final_metrics.json").write_text(
        (sweep / "heatmap" / "final_metrics.json").read_text()
    )
    return sweep


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory) -> str:
    """A kernel spec for *this* interpreter, found before any user or system ``python3`` one."""
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec = jupyter_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "posejax tests", "language": "python"})
    )
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(jupyter_path), previous]))
    yield KERNEL
    if previous is None:
        os.environ.pop("JUPYTER_PATH")
    else:
        os.environ["JUPYTER_PATH"] = previous


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"compare_formulations", "inside_the_formulations"}


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_paired_notebook_is_in_sync_and_its_outputs_are_a_clean_run(script: Path):
    paired = script.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} missing: run `make notebooks`"
    committed = nbformat.read(paired, as_version=4)
    source = jupytext.read(script)
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in source.cells
    ], f"{paired.name} differs from {script.name}: run `make notebooks`"
    # Committed with the outputs of one top-to-bottom run (`make notebooks`), none an error.
    code = [c for c in committed.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{paired.name}: not one clean run"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(script: Path, tiny_sweep: Path, kernel_name: str, monkeypatch):
    monkeypatch.setenv("POSEJAX_RUNS", str(tiny_sweep))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = jupytext.read(script)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=300,
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
