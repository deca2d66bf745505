"""Whole-image inference for both input modes: image (+ person boxes) -> poses in image pixels.

A runner does what the evaluator does to one image, with the pipeline's own geometry
(:mod:`posejax.data.transforms`), and times each stage:

* :class:`TopDownRunner` (single-person formulations): one crop per person box with
  :func:`~posejax.data.transforms.top_down_affine` (the training margin and aspect ratio), the
  crops batched through the network (the last batch padded, so one compiled shape serves any
  number of people), one pose per crop;
* :class:`BottomUpRunner` (multi-person formulations): the whole image letterboxed into the input
  with :func:`~posejax.data.transforms.bottom_up_affine`, every decoded person kept.

Both are called the same way, ``runner(image, boxes=None, box_scores=None, *, keep_maps=False)
-> RunnerResult``, so a caller never asks which one it holds: a top-down runner needs the person
boxes (and says so when they are missing); a bottom-up runner accepts them and does not use them,
since it finds every person itself (``uses_boxes`` tells a caller which, e.g. to warn that the
boxes it was given go unused). Both map the decoded poses back to original-image pixels with the
inverse of the affine that made the input (:func:`posejax.geometry.poses_to_original`). Which one
applies is decided by ``formulation.input_mode`` alone (:func:`make_runner`), never by the
formulation's name.

Stages timed (seconds, ``RunnerResult.timing``): ``preprocess`` (warps), ``network`` (device
compute, including the transfer of the outputs to the host), ``decode`` (the formulation's
decoder), ``postprocess`` (inverse transforms). The first call of a runner also pays for
compilation; call :meth:`warmup` first when timing.

Shape legend: ``P`` people, ``K`` keypoints, ``n`` network inputs (crops), ``h, w`` input size,
``H, W`` map size.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np

from posejax import skeleton
from posejax.data import schema
from posejax.data.transforms import bottom_up_affine, top_down_affine, warp_example
from posejax.formulations.base import BOTTOM_UP, TOP_DOWN, DisplayMap, Formulation
from posejax.geometry import boxes_to_original, poses_to_original

Predict = Callable[[np.ndarray], Any]  # images (B, h, w, 3) uint8 -> outputs pytree
STAGES: tuple[str, ...] = ("preprocess", "network", "decode", "postprocess")


@dataclasses.dataclass
class RunnerResult:
    """People found in one image.

    Attributes:
      poses: ``(P, K, 3)`` float64 ``(x, y, score)`` in original-image pixels; joints the
        decoder did not find are ``(0, 0, 0)``.
      scores: ``(P,)`` person scores (top-down with box scores: decoder score x box score).
      timing: seconds per stage (:data:`STAGES`).
      inputs: ``(n, h, w, 3)`` uint8, what the network saw (crops, or the letterboxed image).
      transforms: ``(n, 2, 3)`` original pixels -> input pixels, per input.
      person_input: ``(P,)`` index of the input each person was decoded from.
      maps: the formulation's display maps per input, ``name -> (n, H, W)`` or ``(n, H, W, 3)``
        (only when asked for).
      map_specs: how each of ``maps`` is drawn (the formulation's ``display_specs``).
      boxes: ``(P, 4)`` person boxes ``(x, y, w, h)`` in original-image pixels, from a
        formulation that predicts boxes (a detector), or the boxes a detector gave a top-down
        runner (:class:`posejax.inference.detection.DetectThenEstimate`); None otherwise.
      box_scores: ``(P,)`` the scores of ``boxes`` (None without boxes).
    """

    poses: np.ndarray
    scores: np.ndarray
    timing: dict[str, float]
    inputs: np.ndarray
    transforms: np.ndarray
    person_input: np.ndarray
    maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    map_specs: dict[str, DisplayMap] = dataclasses.field(default_factory=dict)
    boxes: np.ndarray | None = None
    box_scores: np.ndarray | None = None


def _image_only_example(image: np.ndarray) -> dict[str, np.ndarray]:
    """A stored example with no people, so that :func:`warp_example` warps just the image."""
    k = skeleton.NUM_KEYPOINTS
    return {
        schema.IMAGE: np.asarray(image, dtype=np.uint8),
        schema.IMAGE_ID: np.int64(0),
        schema.KEYPOINTS: np.zeros((0, k, 3), np.float32),
        schema.BOXES: np.zeros((0, 4), np.float32),
        schema.AREA: np.zeros((0,), np.float32),
        schema.IGNORE: np.zeros((0,), bool),
    }


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image


class Runner(abc.ABC):
    """One interface for both modes: ``runner(image, boxes=None, box_scores=None, *,
    keep_maps=False) -> RunnerResult``; shared batching, decoding and back-projection.

    Attributes:
      uses_boxes: whether the person boxes given to a call are used (top-down) or ignored
        (bottom-up: the formulation finds the people itself).
    """

    uses_boxes: ClassVar[bool]

    def __init__(
        self,
        formulation: Formulation,
        predict: Predict,
        *,
        input_size: tuple[int, int],
        batch_size: int,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.formulation = formulation
        self.predict = predict
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch_size = int(batch_size)

    def warmup(self) -> None:
        """Compile the network for this runner's batch shape (a batch of black inputs)."""
        h, w = self.input_size
        jax.block_until_ready(self.predict(np.zeros((self.batch_size, h, w, 3), np.uint8)))

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray | None = None,
        box_scores: np.ndarray | None = None,
        *,
        keep_maps: bool = False,
    ) -> RunnerResult:
        """The people in ``image``.

        Args:
          image: ``(H, W, 3)`` RGB uint8.
          boxes: ``(P, 4)`` person boxes ``(x, y, w, h)`` in image pixels (e.g. a detector's, or
            ground truth). Top-down: required, one pose per box, in box order. Bottom-up: not
            used (``uses_boxes`` is False).
          box_scores: ``(P,)`` detector scores. Top-down: when given, each person's score is the
            decoder's score times the box's (the rescoring of Xiao et al., ECCV 2018).
            Bottom-up: not used.
          keep_maps: also return the formulation's display maps per network input.

        Raises:
          ValueError: a top-down runner without ``boxes``, or box scores that do not match them.
        """
        image = _check_image(image)
        timing = dict.fromkeys(STAGES, 0.0)
        t0 = time.perf_counter()
        inputs, transforms, extra_scores = self._make_inputs(image, boxes, box_scores)
        timing["preprocess"] = time.perf_counter() - t0
        return self._run_inputs(inputs, transforms, extra_scores, timing, keep_maps)

    @abc.abstractmethod
    def _make_inputs(
        self, image: np.ndarray, boxes: np.ndarray | None, box_scores: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(inputs (n, h, w, 3) uint8, transforms (n, 2, 3), person score factors or None)``."""

    def _run_inputs(
        self,
        inputs: np.ndarray,
        transforms: np.ndarray,
        extra_scores: np.ndarray | None,
        timing: dict[str, float],
        keep_maps: bool,
    ) -> RunnerResult:
        n = len(inputs)
        h, w = self.input_size
        poses, scores, person_input, boxes = [], [], [], []
        maps: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            real = len(chunk)
            if real < self.batch_size:  # pad: one compiled shape for any number of people
                pad = np.zeros((self.batch_size - real, h, w, 3), np.uint8)
                chunk = np.concatenate([chunk, pad])
            t0 = time.perf_counter()
            outputs = jax.device_get(jax.block_until_ready(self.predict(chunk)))
            t1 = time.perf_counter()
            predictions = self.formulation.decode(outputs)[:real]
            t2 = time.perf_counter()
            for i, pred in enumerate(predictions):
                index = start + i
                people = poses_to_original(
                    np.reshape(pred.poses, (-1, self.formulation.num_keypoints, 3)),
                    transforms[index],
                )
                person_scores = np.asarray(pred.scores, dtype=np.float64).reshape(-1)
                if extra_scores is not None:
                    person_scores = person_scores * extra_scores[index]
                poses.append(people)
                scores.append(person_scores)
                person_input.append(np.full(len(people), index, np.int64))
                if self.formulation.predicts_boxes:
                    boxes.append(boxes_to_original(pred.boxes, transforms[index]))
            if keep_maps:
                for name, value in self.formulation.display_maps(outputs).items():
                    maps.setdefault(name, []).append(np.asarray(value)[:real])
            t3 = time.perf_counter()
            timing["network"] += t1 - t0
            timing["decode"] += t2 - t1
            timing["postprocess"] += t3 - t2
        k = self.formulation.num_keypoints
        all_scores = np.concatenate(scores) if scores else np.zeros((0,))
        person_boxes = None
        if self.formulation.predicts_boxes:
            person_boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        return RunnerResult(
            poses=np.concatenate(poses) if poses else np.zeros((0, k, 3)),
            scores=all_scores,
            timing=timing,
            inputs=inputs,
            transforms=transforms,
            person_input=(
                np.concatenate(person_input) if person_input else np.zeros((0,), np.int64)
            ),
            maps={name: np.concatenate(parts) for name, parts in maps.items()},
            map_specs=dict(self.formulation.display_specs) if keep_maps else {},
            boxes=person_boxes,
            box_scores=None if person_boxes is None else all_scores,
        )


class TopDownRunner(Runner):
    """Single-person formulations: one crop per person box (``boxes`` are required).

    Args:
      formulation: a formulation with ``input_mode == "top_down"``.
      predict: ``images (B, h, w, 3) uint8 -> outputs`` (e.g. a jitted ``model_def.apply``).
      input_size: ``(h, w)`` network input (the run's ``data.top_down.input_size``).
      margin: context factor around each box (the run's ``data.top_down.margin``).
      batch_size: crops per network call; the last call is padded to it.
    """

    uses_boxes: ClassVar[bool] = True

    def __init__(
        self,
        formulation: Formulation,
        predict: Predict,
        *,
        input_size: tuple[int, int],
        margin: float = 1.25,
        batch_size: int = 16,
    ):
        if formulation.input_mode != TOP_DOWN:
            raise ValueError(f"TopDownRunner needs a top-down formulation, got {formulation}")
        super().__init__(formulation, predict, input_size=input_size, batch_size=batch_size)
        self.margin = float(margin)

    def _make_inputs(self, image, boxes, box_scores):
        if boxes is None:
            height, width = image.shape[:2]
            raise ValueError(
                f"TopDownRunner ({type(self.formulation).__name__}, a top-down formulation) needs "
                "the person boxes: call runner(image, boxes) with boxes (P, 4) (x, y, w, h) in "
                "image pixels, e.g. a person detector's, the ground truth's, or the whole image "
                f"as one person's box [[-0.5, -0.5, {width}, {height}]]"
            )
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if box_scores is not None:
            box_scores = np.asarray(box_scores, dtype=np.float64).reshape(-1)
            if len(box_scores) != len(boxes):
                raise ValueError(f"{len(box_scores)} box scores for {len(boxes)} boxes")
        example = _image_only_example(image)
        h, w = self.input_size
        inputs = np.zeros((len(boxes), h, w, 3), np.uint8)
        transforms = np.zeros((len(boxes), 2, 3), np.float64)
        for i, box in enumerate(boxes):
            matrix = top_down_affine(box, self.input_size, margin=self.margin)
            warped = warp_example(example, matrix, self.input_size)
            inputs[i] = warped[schema.IMAGE]
            transforms[i] = warped["transform"]
        return inputs, transforms, box_scores


class BottomUpRunner(Runner):
    """Multi-person formulations: the whole image, letterboxed into the input.

    Called like a :class:`TopDownRunner`; the ``boxes`` and ``box_scores`` of a call are accepted
    and not used (``uses_boxes`` is False): the formulation finds every person itself, and a
    caller that has boxes (a detector, the ground truth) need not know which mode it runs.

    Args:
      formulation: a formulation with ``input_mode == "bottom_up"``.
      predict: ``images (B, h, w, 3) uint8 -> outputs``.
      input_size: ``(h, w)`` network input (the run's ``data.bottom_up.input_size``).
      batch_size: the batch the network is called with (the image plus padding); 1 by default.
    """

    uses_boxes: ClassVar[bool] = False

    def __init__(
        self,
        formulation: Formulation,
        predict: Predict,
        *,
        input_size: tuple[int, int],
        batch_size: int = 1,
    ):
        if formulation.input_mode != BOTTOM_UP:
            raise ValueError(f"BottomUpRunner needs a bottom-up formulation, got {formulation}")
        super().__init__(formulation, predict, input_size=input_size, batch_size=batch_size)

    def _make_inputs(self, image, boxes, box_scores):
        del boxes, box_scores  # every person the formulation decodes in the whole image
        matrix = bottom_up_affine(image.shape[:2], self.input_size)
        warped = warp_example(_image_only_example(image), matrix, self.input_size)
        inputs = warped[schema.IMAGE][None]
        transforms = np.asarray(warped["transform"], np.float64)[None]
        return inputs, transforms, None


def make_runner(
    formulation: Formulation,
    predict: Predict,
    *,
    input_size: tuple[int, int],
    margin: float = 1.25,
    batch_size: int | None = None,
) -> Runner:
    """The runner for ``formulation.input_mode``.

    Args:
      formulation: any formulation.
      predict: ``images -> outputs``.
      input_size: ``(h, w)`` network input of that mode.
      margin: top-down context factor (ignored bottom-up).
      batch_size: crops per network call (top-down, default 16) or images (bottom-up,
        default 1).
    """
    if formulation.input_mode == TOP_DOWN:
        return TopDownRunner(
            formulation,
            predict,
            input_size=input_size,
            margin=margin,
            batch_size=batch_size or 16,
        )
    if formulation.input_mode == BOTTOM_UP:
        return BottomUpRunner(
            formulation, predict, input_size=input_size, batch_size=batch_size or 1
        )
    raise ValueError(f"unknown input mode {formulation.input_mode!r}")


def load_runner(run_dir: str | Path, *, batch_size: int | None = None) -> tuple[Runner, Any, int]:
    """Runner for a run directory's newest checkpoint: ``(runner, setup, step)``.

    The input size and margin are the run's evaluation settings; the parameters stay on the
    device and are passed to the jitted model at every call (not baked into the program).
    """
    from posejax.runs.directory import restore_run
    from posejax.runs.state import jitted_predict

    setup, model_def, params, step = restore_run(run_dir)
    pipeline = setup.data.eval_pipeline
    runner = make_runner(
        setup.formulation,
        jitted_predict(model_def, params),
        input_size=pipeline.input_size,
        margin=pipeline.margin,
        batch_size=batch_size,
    )
    return runner, setup, step
