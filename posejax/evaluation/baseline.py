"""The mean-pose baseline: what a model that never looks at the image scores.

Fitted on training crops (top-down, ground-truth boxes, no augmentation): the per-joint mean of
the labelled keypoints in input pixels. Every evaluation crop then gets that same pose. Reported
beside every formulation so a reader sees what learning bought.

``python -m posejax.evaluation.baseline [overrides]`` uses the same config tree as training and
writes ``final_metrics.json`` into its run directory, so the summariser treats it as a run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import ClassVar

import hydra
import numpy as np
from flax import nnx
from omegaconf import DictConfig

import posejax.hydra_resolvers  # noqa: F401  (resolvers used by conf/)
from posejax import skeleton
from posejax.data.pipeline import make_eval_batches
from posejax.evaluation.evaluator import ImagePrefix, evaluate
from posejax.formulations.base import TOP_DOWN, Formulation, PosePrediction

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeanPose(Formulation):
    """Predicts ``mean_pose`` ``(K, 2)`` (input pixels) for every crop, score 1."""

    mean_pose: tuple[tuple[float, float], ...] = ()
    input_mode: ClassVar[str] = TOP_DOWN

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return ()  # encode reads nothing: there is nothing to train

    def make_head(self, in_channels, *, rngs: nnx.Rngs):
        raise NotImplementedError("the mean-pose baseline has no network")

    def encode(self, batch):
        return {}

    def loss(self, outputs, targets):
        raise NotImplementedError("the mean-pose baseline is fitted, not trained")

    def oracle_outputs(self, targets):
        raise NotImplementedError("the mean-pose baseline has no outputs to be perfect at")

    def decode(self, outputs, *, stage: int = -1) -> list[PosePrediction]:
        self.stage_index(stage)
        pose = np.concatenate(
            [np.asarray(self.mean_pose, np.float32), np.ones((self.num_keypoints, 1), np.float32)],
            axis=1,
        )
        return [PosePrediction(pose[None], np.ones(1, np.float32)) for _ in range(len(outputs))]


def fit_mean_pose(source, pipeline, *, num_images: int | None = 1000) -> np.ndarray:
    """Per-joint mean of labelled keypoints over un-augmented training crops, ``(K, 2)``."""
    total = np.zeros((skeleton.NUM_KEYPOINTS, 2))
    count = np.zeros((skeleton.NUM_KEYPOINTS, 1))
    for batch in make_eval_batches(ImagePrefix(source, num_images), pipeline):
        kps = batch["keypoints"][:, 0]
        labelled = (kps[..., 2:3] > 0) & (batch["weight"][:, None, None] > 0)
        total += (kps[..., :2] * labelled).sum(0)
        count += labelled.sum(0)
    if (count == 0).any():
        missing = [skeleton.COCO_KEYPOINTS[k] for k in np.flatnonzero(count[:, 0] == 0)]
        raise ValueError(f"mean pose: joints {missing} are never labelled in the training crops")
    return total / count


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    from posejax.data.splits import open_split
    from posejax.runs.directory import resolve_run_dir
    from posejax.runs.setup import data_config

    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    bs = int(cfg.trainer.eval_batch_size or cfg.trainer.batch_size)
    data = data_config(cfg, TOP_DOWN, batch_size=bs, eval_batch_size=bs, seed=int(cfg.trainer.seed))
    mean = fit_mean_pose(open_split(data, data.train_split), data.eval_pipeline)
    baseline = MeanPose(
        stride=1, input_size=data.pipeline.input_size, mean_pose=tuple(map(tuple, mean.tolist()))
    )
    result = evaluate(
        lambda images: np.zeros(len(images)),
        baseline,
        open_split(data, data.eval_split),
        data.eval_pipeline,
        num_images=cfg.trainer.final_eval_images,
    )
    metrics = {**result.metrics, "train_steps": 0.0, "train_batch_size": 0.0}
    (Path(run_dir) / "final_metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("mean-pose baseline: PCK@0.2 %.3f, OKS AP %.3f", metrics["PCK@0.2"], metrics["OKS_AP"])


if __name__ == "__main__":
    _main()
