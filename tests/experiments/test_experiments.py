"""The experiment presets compose with every launcher, and the experiment tools work end to end.

* Every ``conf/experiment/e{2..6}_{quick,full}.yaml`` composes with the basic, joblib and SLURM
  launchers, and every point of its sweep (``hydra.sweeper.params``) passes the start-up checks
  (formulation, data, trainer and backbone are built abstractly: nothing is compiled or read).
* ``decode(stage=)`` and ``display_maps(stage=)``, what ``paf_stages`` evaluates each stage with,
  read exactly the stage they name.
* ``paf_stages``, ``matching``, ``runtime``, ``learning_curves``, ``decoder_tuning`` and
  ``python -m posejax.evaluate --oracle`` run on two tiny trained runs and write their tables
  and plots.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from untrained_runs import write_untrained_run

from posejax import evaluate as evaluate_cli
from posejax.experiments import decoder_tuning, learning_curves, matching, paf_stages, runtime
from posejax.experiments.common import MemoisedPredict
from posejax.formulations.paf import PartAffinityFields
from posejax.runs.setup import build_backbone, check_config

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
PRESETS = sorted(
    p.stem for n in range(2, 7) for p in (CONF_DIR / "experiment").glob(f"e{n}_*.yaml")
)
LAUNCHERS = [p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")] + ["basic", "joblib"]


def composed(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def sweep_points(cfg) -> list[list[str]]:
    """Every combination of the preset's ``hydra.sweeper.params`` as override lists."""
    params = OmegaConf.to_container(cfg.hydra.sweeper.params or {})
    axes = [
        [f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()
    ]
    return [list(point) for point in itertools.product(*axes)]


def startup_checks(cfg) -> None:
    """What ``build_setup`` checks, with the backbone built abstractly (no parameters)."""
    check_config(cfg, num_devices=1)
    nnx.eval_shape(lambda: build_backbone(cfg, dtype=np.float32, rngs=nnx.Rngs(0)))


def test_presets_exist():
    for n in range(2, 7):
        assert {f"e{n}_quick", f"e{n}_full"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_sweep_point_of_a_preset_passes_the_startup_checks(preset):
    cfg = composed(f"experiment={preset}", hydra=True)
    points = sweep_points(cfg)
    assert points and points != [[]], f"{preset} defines no sweep (hydra.sweeper.params)"
    for point in points:
        startup_checks(composed(f"experiment={preset}", *point))


@pytest.mark.parametrize("launcher", LAUNCHERS)
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_with_launcher(preset, launcher):
    cfg = composed(f"experiment={preset}", f"hydra/launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_.startswith("hydra")
    assert cfg.hydra.sweeper.params


def test_e6_selects_training_images_by_split_slicing():
    cfg = composed("experiment=e6_quick", "train_images=123")
    assert cfg.data.train_split == "train[:123]"
    assert cfg.data.eval_split == "validation"


# --- decoding one stage -------------------------------------------------------------------------


def _two_people_maps(formulation: PartAffinityFields) -> dict[str, np.ndarray]:
    """Ground-truth maps of two standing people as ``(1, H, W, ...)`` arrays."""
    keypoints = np.zeros((1, 2, 17, 3), np.float32)
    for person, x0 in enumerate((16.0, 44.0)):
        ys = np.linspace(8.0, 56.0, 17)
        keypoints[0, person, :, 0] = x0 + np.where(np.arange(17) % 2, 3.0, -3.0)
        keypoints[0, person, :, 1] = ys
        keypoints[0, person, :, 2] = 2
    batch = {
        "keypoints": keypoints,
        "valid": np.ones((1, 2), bool),
        "loss_mask": np.ones((1, 64, 64), np.float32),
    }
    return jax.device_get(formulation.encode(batch))


def test_decoding_a_stage_decodes_the_stage_it_names():
    formulation = PartAffinityFields(stride=4, input_size=(64, 64), stages=3)
    targets = _two_people_maps(formulation)
    # Only stage 2 holds the people; stages 1 and 3 are empty.
    outputs = {
        key: np.stack([np.zeros_like(targets[key]), targets[key], np.zeros_like(targets[key])])
        for key in formulation.staged_outputs
    }
    found = [len(formulation.decode(outputs, stage=s - 1)[0].poses) for s in (1, 2, 3)]
    assert found == [0, 2, 0]
    np.testing.assert_array_equal(
        formulation.decode(outputs, stage=-2)[0].poses,
        formulation.decode(outputs, stage=1)[0].poses,
    )
    assert formulation.display_maps(outputs, stage=1)["heatmap_max"].max() > 0.9
    assert formulation.display_maps(outputs, stage=2)["heatmap_max"].max() == 0.0
    with pytest.raises(ValueError, match="stage"):
        formulation.decode(outputs, stage=3)


def test_memoised_predict_runs_the_network_once_per_batch():
    calls = []
    memo = MemoisedPredict(lambda images: calls.append(1) or {"x": images.sum()})
    a, b = np.zeros((2, 4, 4, 3), np.uint8), np.ones((2, 4, 4, 3), np.uint8)
    assert memo(a)["x"] == 0 and memo(b)["x"] == 96 and memo(a)["x"] == 0
    assert memo.calls == len(calls) == 2


# --- the tools, end to end on tiny runs ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny trained heatmap run and a tiny 2-stage PAF run (in this process)."""
    from posejax.train.loop import train

    tmp = tmp_path_factory.mktemp("experiment_tools")
    runs = {}
    for name in ("heatmap", "paf"):
        cfg = composed(
            f"formulation={name}",
            "data=synthetic_tiny",
            "backbone=tiny",
            f"data.data_dir={tmp / 'data'}",
            "trainer.steps=2",
            "trainer.batch_size=4",
            "trainer.log_every=2",
            "trainer.eval_every=2",
            "trainer.checkpoint_every=2",
            "trainer.eval_images=4",
            "trainer.final_eval_images=4",
            "trainer.num_visualize=0",
            "trainer.progress=false",
            "trainer.tensorboard=false",
        )
        runs[name] = tmp / name
        train(cfg, runs[name])
    return runs


def _table(folder: Path) -> list[dict]:
    assert (folder / "summary.md").exists() and (folder / "plot.png").stat().st_size > 0
    with (folder / "summary.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_paf_stages_tool(tiny_runs, tmp_path):
    paf_stages.main([str(tiny_runs["paf"]), "--out", str(tmp_path), "--num-images", "6"])
    rows = _table(tmp_path)
    assert [r["decode_stage"] for r in rows] == ["1", "2"]
    assert all(float(r["heatmap_mse"]) >= 0 for r in rows)
    with pytest.raises(TypeError, match="no stage axis"):
        paf_stages.evaluate_stages(tiny_runs["heatmap"], num_images=2)


@pytest.mark.slow
def test_matching_tool(tiny_runs, tmp_path):
    rows = matching.main(
        [str(tiny_runs["paf"]), "--out", str(tmp_path), "--num-images", "6", "--repeats", "1"]
    )
    assert [r["overrides"]["matcher"] for r in rows] == ["greedy", "optimal", "ilp", "ilp_dense"]
    assert all(r["metrics"]["network_calls"] == rows[0]["metrics"]["network_calls"] for r in rows)
    assert rows[0]["metrics"]["same_as_greedy"] == 1.0
    assert len(_table(tmp_path)) == 4


@pytest.mark.slow
def test_runtime_tool(tiny_runs, tmp_path):
    rows = runtime.main(
        [
            "--top-down",
            str(tiny_runs["heatmap"]),
            "--bottom-up",
            str(tiny_runs["paf"]),
            "--out",
            str(tmp_path),
            "--max-people",
            "2",
            "--scenes",
            "1",
            "--repeats",
            "1",
            "--crop-batches",
            "1",
            "--detector",
            str(write_untrained_run(tmp_path / "detector", "detector")),
            "--det-score-threshold",
            "0",
        ]
    )
    assert len(rows) == 6  # 3 runners x 2 people counts
    one_crop = [r for r in rows if r["run"].startswith("top-down") and "detector" not in r["run"]]
    assert [r["metrics"]["found_mean"] for r in one_crop] == [
        r["metrics"]["people_mean"] for r in one_crop
    ]  # top-down: one pose per box
    detected = [r["metrics"] for r in rows if "detector" in r["run"]]
    assert all(m["detection_ms"] > 0 and m["found_mean"] >= 1 for m in detected)
    assert all(r["metrics"]["detection_ms"] == 0 for r in rows if "detector" not in r["run"])
    assert "ms/person" in (tmp_path / "summary.md").read_text()
    assert len(_table(tmp_path)) == 6


@pytest.mark.slow
def test_oracle_evaluation_scores_the_targets(tiny_runs, tmp_path):
    """A perfect heatmap network scores AP ~1 (on the tiny data's 8x6 maps a peak on the map
    border gets no sub-pixel refinement; E1's 24x18 maps score 1.000); the oracle needs no
    checkpoint and writes a row."""
    metrics = evaluate_cli.main(
        [str(tiny_runs["heatmap"]), "--oracle", "--num-images", "6", "--out", str(tmp_path / "o")]
    )
    assert metrics["OKS_AP"] > 0.95 and metrics["people_found_ratio"] == 1.0
    row = json.loads((tmp_path / "o" / "final_metrics.json").read_text())
    assert row["OKS_AP"] == metrics["OKS_AP"] and row["train_steps"] == 0.0
    assert (tiny_runs["heatmap"] / "eval_validation_oracle.json").exists()
    trained = json.loads((tiny_runs["heatmap"] / "final_metrics.json").read_text())
    assert trained["OKS_AP"] < metrics["OKS_AP"]  # 2 training steps are far from perfect
    paf = evaluate_cli.main([str(tiny_runs["paf"]), "--oracle", "--num-images", "6"])
    assert paf["OKS_AP"] > 0.5 and 0.5 < paf["people_found_ratio"] <= 1.5


@pytest.mark.slow
def test_learning_curves_tool(tiny_runs, tmp_path):
    learning_curves.main([str(tiny_runs["heatmap"]), str(tiny_runs["paf"]), "--out", str(tmp_path)])
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    with (tmp_path / "learning_curves.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["heatmap", "paf"]  # one evaluation each (step 2)
    assert all(r["step"] == "2" and float(r["train_seconds"]) > 0 for r in rows)
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        learning_curves.read_curve(tmp_path)


@pytest.mark.slow
def test_decoder_tuning_tool(tiny_runs, tmp_path):
    rows = decoder_tuning.main(
        [
            str(tiny_runs["paf"]),
            "--out",
            str(tmp_path),
            "--num-images",
            "4",
            "--grid",
            "parsing.min_parts=2,4",
            "parsing.min_person_score=0.2",
        ]
    )
    assert (
        len(rows) == 2
        and rows[0]["metrics"]["network_calls"] == rows[1]["metrics"]["network_calls"]
    )
    assert rows[0]["metrics"]["OKS_AP"] >= rows[1]["metrics"]["OKS_AP"]
    with pytest.raises(ValueError, match="split the result tables report"):
        decoder_tuning.tune(tiny_runs["paf"], ["parsing.min_parts=2"], split="validation")
    with pytest.raises(ValueError, match="has no field 'no_such_field'"):
        decoder_tuning.tune(tiny_runs["paf"], ["no_such_field=1"], num_images=2)
    with pytest.raises(ValueError, match="ParsingConfig has no field 'nope'"):
        decoder_tuning.tune(tiny_runs["paf"], ["parsing.nope=1"], num_images=2)
