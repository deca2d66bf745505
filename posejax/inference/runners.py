"""Whole-image inference for both input modes: image (+ person boxes) -> poses in image pixels.

A runner does what the evaluator does to one image, with the pipeline's own geometry
(:mod:`posejax.data.transforms`), and times each stage:

* :class:`TopDownRunner` (single-person formulations): one crop per person box with
  :func:`~posejax.data.transforms.top_down_affine` (the training margin and aspect ratio), the
  crops batched through the network (the last batch padded, so one compiled shape serves any
  number of people), one pose per crop;
* :class:`BottomUpRunner` (multi-person formulations): the whole image letterboxed into the input
  with :func:`~posejax.data.transforms.bottom_up_affine`, every decoded person kept.

Both map the decoded poses back to original-image pixels with the inverse of the affine that
made the input. Which one applies is decided by ``formulation.input_mode`` alone
(:func:`make_runner`), never by the formulation's name.

Stages timed (seconds, ``RunnerResult.timing``): ``preprocess`` (warps), ``network`` (device
compute, including the transfer of the outputs to the host), ``decode`` (the formulation's
decoder), ``postprocess`` (inverse transforms). The first call of a runner also pays for
compilation; call :meth:`warmup` first when timing.

Shape legend: ``P`` people, ``K`` keypoints, ``n`` network inputs (crops), ``h, w`` input size,
``H, W`` map size.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from posejax import skeleton
from posejax.data import schema
from posejax.data.transforms import bottom_up_affine, top_down_affine, warp_example
from posejax.formulations.base import BOTTOM_UP, TOP_DOWN, Formulation
from posejax.geometry import poses_to_original

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
    """

    poses: np.ndarray
    scores: np.ndarray
    timing: dict[str, float]
    inputs: np.ndarray
    transforms: np.ndarray
    person_input: np.ndarray
    maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


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


class _Runner:
    """Shared batching, decoding and back-projection."""

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
        poses, scores, person_input = [], [], []
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
            if keep_maps:
                for name, value in self.formulation.display_maps(outputs).items():
                    maps.setdefault(name, []).append(np.asarray(value)[:real])
            t3 = time.perf_counter()
            timing["network"] += t1 - t0
            timing["decode"] += t2 - t1
            timing["postprocess"] += t3 - t2
        k = self.formulation.num_keypoints
        return RunnerResult(
            poses=np.concatenate(poses) if poses else np.zeros((0, k, 3)),
            scores=np.concatenate(scores) if scores else np.zeros((0,)),
            timing=timing,
            inputs=inputs,
            transforms=transforms,
            person_input=(
                np.concatenate(person_input) if person_input else np.zeros((0,), np.int64)
            ),
            maps={name: np.concatenate(parts) for name, parts in maps.items()},
        )


class TopDownRunner(_Runner):
    """Single-person formulations: one crop per person box.

    Args:
      formulation: a formulation with ``input_mode == "top_down"``.
      predict: ``images (B, h, w, 3) uint8 -> outputs`` (e.g. a jitted ``model_def.apply``).
      input_size: ``(h, w)`` network input (the run's ``data.top_down.input_size``).
      margin: context factor around each box (the run's ``data.top_down.margin``).
      batch_size: crops per network call; the last call is padded to it.
    """

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

    def __call__(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        box_scores: np.ndarray | None = None,
        *,
        keep_maps: bool = False,
    ) -> RunnerResult:
        """Poses of the people in ``boxes``.

        Args:
          image: ``(H, W, 3)`` RGB uint8.
          boxes: ``(P, 4)`` person boxes ``(x, y, w, h)`` in image pixels (e.g. a detector's, or
            ground truth); one pose per box, in box order.
          box_scores: ``(P,)`` detector scores; when given, each person's score is the decoder's
            score times the box's (the rescoring of Xiao et al., ECCV 2018).
          keep_maps: also return the formulation's display maps per crop.
        """
        image = _check_image(image)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if box_scores is not None:
            box_scores = np.asarray(box_scores, dtype=np.float64).reshape(-1)
            if len(box_scores) != len(boxes):
                raise ValueError(f"{len(box_scores)} box scores for {len(boxes)} boxes")
        timing = dict.fromkeys(STAGES, 0.0)
        t0 = time.perf_counter()
        example = _image_only_example(image)
        h, w = self.input_size
        inputs = np.zeros((len(boxes), h, w, 3), np.uint8)
        transforms = np.zeros((len(boxes), 2, 3), np.float64)
        for i, box in enumerate(boxes):
            matrix = top_down_affine(box, self.input_size, margin=self.margin)
            warped = warp_example(example, matrix, self.input_size)
            inputs[i] = warped[schema.IMAGE]
            transforms[i] = warped["transform"]
        timing["preprocess"] = time.perf_counter() - t0
        return self._run_inputs(inputs, transforms, box_scores, timing, keep_maps)


class BottomUpRunner(_Runner):
    """Multi-person formulations: the whole image, letterboxed into the input.

    Args:
      formulation: a formulation with ``input_mode == "bottom_up"``.
      predict: ``images (B, h, w, 3) uint8 -> outputs``.
      input_size: ``(h, w)`` network input (the run's ``data.bottom_up.input_size``).
      batch_size: the batch the network is called with (the image plus padding); 1 by default.
    """

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

    def __call__(self, image: np.ndarray, *, keep_maps: bool = False) -> RunnerResult:
        """Every person the formulation decodes in ``image`` (``(H, W, 3)`` RGB uint8)."""
        image = _check_image(image)
        timing = dict.fromkeys(STAGES, 0.0)
        t0 = time.perf_counter()
        matrix = bottom_up_affine(image.shape[:2], self.input_size)
        warped = warp_example(_image_only_example(image), matrix, self.input_size)
        inputs = warped[schema.IMAGE][None]
        transforms = np.asarray(warped["transform"], np.float64)[None]
        timing["preprocess"] = time.perf_counter() - t0
        return self._run_inputs(inputs, transforms, None, timing, keep_maps)


def make_runner(
    formulation: Formulation,
    predict: Predict,
    *,
    input_size: tuple[int, int],
    margin: float = 1.25,
    batch_size: int | None = None,
) -> TopDownRunner | BottomUpRunner:
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


def load_runner(
    run_dir: str | Path, *, batch_size: int | None = None
) -> tuple[TopDownRunner | BottomUpRunner, Any, int]:
    """Runner for a run directory's newest checkpoint: ``(runner, setup, step)``.

    The input size and margin are the run's evaluation settings; the parameters stay on the
    device and are passed to the jitted model at every call (not baked into the program).
    """
    from posejax.runs.directory import restore_run

    setup, model_def, params, step = restore_run(run_dir)
    apply = jax.jit(model_def.apply)
    pipeline = setup.data.eval_pipeline
    runner = make_runner(
        setup.formulation,
        lambda images: apply(params, images),
        input_size=pipeline.input_size,
        margin=pipeline.margin,
        batch_size=batch_size,
    )
    return runner, setup, step
