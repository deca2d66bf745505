"""Top-down without ground-truth boxes: a trained person detector feeds a top-down runner.

* :func:`load_detector` restores a run of a formulation that predicts boxes (the centre-point
  detector, ``formulation=detector``) as a :class:`BoxDetector`: ``image -> (boxes, scores)`` in
  original-image pixels, the boxes above ``score_threshold`` (by default the run's own
  ``people_threshold``: the boxes its formulation counts as people), each grown by ``expand``
  about its centre;
* :class:`DetectThenEstimate` puts one in front of a top-down runner and is called like every
  runner (``system(image, boxes=None, box_scores=None, *, keep_maps=False) -> RunnerResult``):
  without boxes it detects them, with boxes it uses those. Each person's score is the pose
  decoder's score times the box score (Xiao et al., ECCV 2018), and ``timing["detection"]``
  holds the detector's time (network + decoding), so that the runtime of a top-down system
  includes finding the people.

The score threshold trades the detector's recall against false people; ``posejax.evaluate
RUN --detector DET_RUN`` reports top-down AP with detected boxes at any threshold (choose it on
the test split or on training images, never on the split a table reports). The default is the
detector formulation's ``person_threshold`` (``conf/formulation/detector.yaml``), 0.2, chosen
on the *test* split (first 300 images; E1's quick heatmap run and quick detector, 96x96 x 1400
steps): OKS AP 0.0045 at 0.1, 0.2 and 0.3, PCK@0.2 0.603, 0.602 and 0.586, people found per
person present 1.44, 1.22 and 0.98: the highest threshold that costs neither AP nor PCK. (With
the earlier 128x128 x 600-step detector: AP 0.0040 at 0.05-0.2, 0.0037 at 0.3.)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from posejax.inference.runners import Runner, RunnerResult, load_runner


class BoxDetector:
    """``image -> (boxes (P, 4) xywh, scores (P,))``, original-image pixels, best first.

    Args:
      runner: a runner whose formulation predicts boxes (``predicts_boxes``).
      score_threshold: boxes with a lower score are dropped; None: the formulation's
        ``people_threshold``.
      expand: each box is scaled by this factor about its centre (1: as detected).
    """

    def __init__(
        self,
        runner: Runner,
        *,
        score_threshold: float | None = None,
        expand: float = 1.0,
    ):
        if not runner.formulation.predicts_boxes:
            raise ValueError(
                f"a detector must predict person boxes; {type(runner.formulation).__name__} does "
                "not (train one with formulation=detector)"
            )
        if expand <= 0:
            raise ValueError(f"box expand must be > 0, got {expand}")
        self.runner = runner
        if score_threshold is None:
            score_threshold = runner.formulation.people_threshold
        self.score_threshold = float(score_threshold)
        self.expand = float(expand)

    def warmup(self) -> None:
        self.runner.warmup()

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.runner(image)
        keep = result.scores >= self.score_threshold
        boxes, scores = result.boxes[keep], result.scores[keep]
        order = np.argsort(-scores, kind="stable")
        boxes, scores = boxes[order], scores[order]
        centre = boxes[:, :2] + 0.5 * boxes[:, 2:]
        size = boxes[:, 2:] * self.expand
        return np.concatenate([centre - 0.5 * size, size], axis=1), scores


def load_detector(
    run_dir: str | Path,
    *,
    score_threshold: float | None = None,
    expand: float = 1.0,
) -> BoxDetector:
    """The :class:`BoxDetector` of a detector run's newest checkpoint.

    Raises:
      ValueError: the run's formulation does not predict boxes (names the run).
    """
    runner, _, _ = load_runner(run_dir)
    try:
        return BoxDetector(runner, score_threshold=score_threshold, expand=expand)
    except ValueError as err:
        raise ValueError(f"{run_dir}: {err}") from None


class DetectThenEstimate:
    """A top-down runner fed by a person detector, with the runner interface.

    Attributes:
      formulation: the pose formulation (the top-down runner's).
      uses_boxes: True: boxes given to a call replace the detector's.
    """

    uses_boxes = True

    def __init__(self, pose_runner: Runner, detector: BoxDetector):
        if not pose_runner.uses_boxes:
            raise ValueError(
                f"{type(pose_runner.formulation).__name__} is bottom-up: it finds the people "
                "itself and needs no detector"
            )
        self.pose_runner = pose_runner
        self.detector = detector
        self.formulation = pose_runner.formulation

    def warmup(self) -> None:
        self.detector.warmup()
        self.pose_runner.warmup()

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray | None = None,
        box_scores: np.ndarray | None = None,
        *,
        keep_maps: bool = False,
    ) -> RunnerResult:
        """The people in ``image``: the detector's boxes (or ``boxes``) through the pose runner."""
        detection = 0.0
        if boxes is None:
            t0 = time.perf_counter()
            boxes, box_scores = self.detector(image)
            detection = time.perf_counter() - t0
        result = self.pose_runner(image, boxes, box_scores, keep_maps=keep_maps)
        result.timing["detection"] = detection
        result.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        result.box_scores = None if box_scores is None else np.asarray(box_scores, np.float64)
        return result
