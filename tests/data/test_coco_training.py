"""A few training steps on data=coco pointed at the real COCO fixture, evaluated with pycocotools.

``conf/data/coco_fixture.yaml`` is ``conf/data/coco.yaml`` with the fixture folder as
``data.manual_dir`` and the fixture's file names as the builder's ``splits``; the dataset is
built on first use by the training loop itself.
"""

from __future__ import annotations

import json
import math
import os
import pathlib

import pytest
from hydra import compose, initialize_config_dir

from posejax.evaluation import coco_keypoint_ap

CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "conf"
FIXTURE = pathlib.Path(os.environ["POSEJAX_FIXTURES"]) / "real/mmpose/coco"


def test_short_heatmap_training_on_coco_evaluates_with_pycocotools(tmp_path):
    from posejax.train.loop import train

    overrides = [
        "data=coco_fixture",
        f"data.manual_dir={FIXTURE}",
        f"data.data_dir={tmp_path / 'data'}",
        "data.top_down.input_size=[32,24]",
        "backbone=tiny",
        "formulation=heatmap",
        "trainer.steps=4",
        "trainer.batch_size=4",
        "trainer.log_every=2",
        "trainer.eval_every=4",
        "trainer.checkpoint_every=4",
        "trainer.eval_images=null",
        "trainer.final_eval_images=null",
        "trainer.num_visualize=2",
        "trainer.tensorboard=false",
        "trainer.progress=false",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir = tmp_path / "run"
    metrics = train(cfg, run_dir)

    assert metrics["num_images"] == 4 and metrics["train_steps"] == 4
    assert 0.0 <= metrics["OKS_AP"] <= 1.0 and 0.0 <= metrics["PCK@0.2"] <= 1.0
    assert math.isfinite(metrics["ms_per_image"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and math.isfinite(rows[-1]["loss"])

    # predictions.json is in COCO's own pixel frame: pycocotools on the untouched annotation
    # file gives the evaluator's AP (12 scorable people, one crop each).
    results = json.loads((run_dir / "predictions.json").read_text())
    assert len(results) == 12
    assert {r["image_id"] for r in results} == {785, 40083, 196141, 197388}
    stats = coco_keypoint_ap(FIXTURE / "test_coco.json", results)
    assert stats["AP"] == pytest.approx(metrics["OKS_AP"], abs=1e-9)
    assert stats["AR"] == pytest.approx(metrics["OKS_AR"], abs=1e-9)
