"""One evaluation loop for every formulation.

The evaluator reads eval batches from the shared pipeline, runs ``predict(images) -> outputs``,
asks the formulation to ``decode`` them (the last stage, or any ``stage=``), maps the poses back
to original-image pixels with the inverse of each example's affine transform
(:func:`posejax.geometry.poses_to_original`), and scores them against the split's ground truth:

* COCO OKS AP/AR with pycocotools (top-down: one detection per ground-truth box, scored by the
  decoder's person score; bottom-up: every decoded person);
* PCK@0.2 normalised by the ground-truth box's larger side, and by the torso (left shoulder to
  right hip) where both joints are labelled. Top-down predictions belong to the person they
  were cropped for; bottom-up predictions are matched to ground-truth people greedily by OKS
  (an unmatched person scores 0 on every joint);
* COCO box AP/AR (``box_AP``, ``box_AP50``, ...) with pycocotools, for formulations that predict
  person boxes (``predicts_boxes``: the detector); OKS AP and PCK only for those that predict
  keypoints (``predicts_keypoints``);
* mIoU over the formulation's ``num_dense_classes`` classes, for formulations that label
  pixels;
* ``people_found_ratio``: people predicted with a score of at least the formulation's
  ``people_threshold`` / scorable people present (bottom-up: how well the parser or detector
  counts the crowd; 1 for top-down, one prediction per ground-truth box);
* milliseconds per *image* (network + decoding, whole images: a top-down image costs one crop
  per person), excluding the first batch, which pays for compilation.

It never asks which formulation it runs: it uses only the formulation contract
(:mod:`posejax.formulations.base`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from posejax import skeleton
from posejax.data import schema
from posejax.data.coco_export import split_to_coco
from posejax.data.pipeline import PipelineConfig, make_eval_batches
from posejax.evaluation.coco_metrics import (
    boxes_to_coco_results,
    coco_box_ap,
    coco_keypoint_ap,
    predictions_to_coco_results,
)
from posejax.evaluation.dataset_metrics import dataset_metrics
from posejax.evaluation.keypoint_metrics import (
    bbox_size,
    confusion_matrix,
    mean_iou,
    pck,
    torso_size,
)
from posejax.formulations.base import TOP_DOWN, Formulation
from posejax.geometry import boxes_to_original, poses_to_original


class ImagePrefix(Sequence):
    """The first ``n`` examples of a random-access source (a view, nothing is copied)."""

    def __init__(self, source: Sequence, n: int | None):
        self.source = source
        self.n = len(source) if n is None else min(int(n), len(source))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.source[i % self.n]


@dataclasses.dataclass
class EvalOutput:
    """Metrics plus what is needed to draw and to rescore."""

    metrics: dict[str, float]
    results: list[dict]  # COCO results format, original-image pixels (keypoints)
    gt: dict  # COCO ground truth of the evaluated images
    samples: list[dict]  # first few batches' inputs + decoded poses (input pixels) + maps
    box_results: list[dict] = dataclasses.field(default_factory=list)  # boxes, when predicted


def evaluate(
    predict: Callable[[np.ndarray], Any],
    formulation: Formulation,
    source: Sequence,
    pipeline: PipelineConfig,
    *,
    num_images: int | None = None,
    encode: Callable | None = None,
    keep_samples: int = 0,
    gt: dict | None = None,
    oracle: bool = False,
    stage: int = -1,
) -> EvalOutput:
    """Evaluate ``predict`` on the first ``num_images`` images of ``source``.

    Args:
      predict: ``images (B, h, w, 3) uint8 -> outputs`` (device or host arrays).
      formulation: decodes the outputs; also supplies dense predictions/targets for mIoU
        (``num_dense_classes`` of them) and the display maps of the kept samples.
      source: random-access split in the stored example layout.
      pipeline: eval pipeline settings (mode, input size, batch size; augmentation is off).
      num_images: evaluate on this image prefix of the split (all images when None).
      encode: jitted ``formulation.encode``, needed only when the formulation labels pixels
        (and for ``oracle``); it is given ``formulation.encoder_batch(batch)``, the declared
        batch keys only.
      keep_samples: number of examples whose inputs, poses and display maps are kept.
      gt: precomputed COCO ground truth for the same image prefix (saves one pass).
      oracle: score a perfect network instead of ``predict`` (which is then unused): each
        batch's outputs are ``formulation.oracle_outputs(encode(batch))``, so the metrics are
        the ceiling the encoding, decoding and parsing impose. Needs ``encode``.
      stage: the stage decoded and displayed (``Formulation.stage_index``; ``-1`` the last), so
        that every refinement stage of one network can be scored with the same evaluator.
    """
    formulation.stage_index(stage)  # a bad stage fails before any batch is read
    dense_classes = formulation.num_dense_classes
    if oracle and encode is None:
        raise ValueError("evaluate(oracle=True) needs encode= (the targets are the outputs)")
    subset = ImagePrefix(source, num_images)
    if gt is None:
        gt = split_to_coco(subset)
    image_ids: list[int] = []
    poses_orig: list[np.ndarray] = []
    scores_all: list[np.ndarray] = []
    boxes_all: list[np.ndarray] = []
    crop_of: dict[tuple[int, int], int] = {}
    confusion = None
    samples: list[dict] = []
    timed_seconds = 0.0
    timed_images: set[int] = set()
    first = True
    for batch in make_eval_batches(subset, pipeline):
        t0 = time.perf_counter()
        # Reused for mIoU below.
        targets = encode(formulation.encoder_batch(batch)) if oracle else None
        if oracle:
            outputs = formulation.oracle_outputs(targets)
        else:
            outputs = jax.block_until_ready(predict(batch["image"]))
        host_outputs = jax.device_get(outputs)
        predictions = formulation.decode(host_outputs, stage=stage)
        elapsed = time.perf_counter() - t0
        real = np.flatnonzero(batch["weight"] > 0)
        if not first:
            timed_seconds += elapsed
            timed_images.update(int(batch["image_id"][i]) for i in real)
        first = False
        if dense_classes:
            if encode is None:
                raise ValueError("evaluate: this formulation labels pixels; pass encode=")
            if targets is None:
                targets = encode(formulation.encoder_batch(batch))
            dense = formulation.dense_predictions(host_outputs)
            target = np.asarray(formulation.dense_targets(jax.device_get(targets)))
            target = np.where(batch["weight"][:, None, None] > 0, target, -1)
            part = confusion_matrix(dense, target, dense_classes)
            confusion = part if confusion is None else confusion + part
        display = (
            formulation.display_maps(host_outputs, stage=stage)
            if len(samples) < keep_samples
            else {}
        )
        for i in real:
            pred = predictions[i]
            poses = poses_to_original(pred.poses, batch["transform"][i])
            image_id = int(batch["image_id"][i])
            if pipeline.mode == TOP_DOWN:
                crop_of[(image_id, int(batch["person_index"][i]))] = len(image_ids)
            image_ids.append(image_id)
            poses_orig.append(poses)
            scores_all.append(np.asarray(pred.scores, dtype=np.float64))
            if formulation.predicts_boxes:
                boxes_all.append(boxes_to_original(pred.boxes, batch["transform"][i]))
            if len(samples) < keep_samples:
                samples.append(
                    {
                        "image": batch["image"][i],
                        "poses": np.asarray(pred.poses),
                        "scores": np.asarray(pred.scores),
                        "boxes": None if pred.boxes is None else np.asarray(pred.boxes),
                        "gt": batch["keypoints"][i][batch["valid"][i]],
                        "maps": {k: v[i] for k, v in display.items()},
                        "image_id": image_id,
                        "person_index": (
                            int(batch["person_index"][i]) if pipeline.mode == TOP_DOWN else -1
                        ),
                        "transform": np.asarray(batch["transform"][i]),
                        "original_poses": poses,
                        "original_boxes": boxes_all[-1] if formulation.predicts_boxes else None,
                    }
                )

    _attach_originals(samples, subset)
    evaluated_ids = sorted({img["id"] for img in gt["images"]})
    people = _people_table(subset)
    metrics: dict[str, float] = {}
    results: list[dict] = []
    if formulation.predicts_keypoints:
        results, keypoint_metrics = _keypoint_metrics(
            gt, people, image_ids, poses_orig, scores_all, crop_of, pipeline.mode == TOP_DOWN
        )
        metrics.update(keypoint_metrics)
    box_results: list[dict] = []
    if formulation.predicts_boxes:
        box_results = boxes_to_coco_results(image_ids, boxes_all, scores_all)
        stats = coco_box_ap(gt, box_results, image_ids=evaluated_ids)
        metrics.update({f"box_{k}": v for k, v in stats.items()})
    # Bottom-up decoders return only the people they are confident of (each parser's own
    # score threshold), top-down ones one person per crop (ratio 1 by construction).
    threshold = formulation.people_threshold
    found = sum(int(np.sum(s >= threshold)) for s in scores_all)
    metrics["people_found_ratio"] = found / len(people.keys) if people.keys else float("nan")
    if confusion is not None:
        metrics["mIoU"], _ = mean_iou(confusion)
    metrics["ms_per_image"] = (
        1000.0 * timed_seconds / len(timed_images) if timed_images else float("nan")
    )
    metrics["num_images"] = float(len(subset))
    return EvalOutput(
        metrics=metrics, results=results, gt=gt, samples=samples, box_results=box_results
    )


def _keypoint_metrics(gt, people, image_ids, poses, scores, crop_of, top_down):
    """``(COCO results, metrics)``: OKS AP/AR through COCOeval and PCK of original-pixel poses."""
    results = predictions_to_coco_results(image_ids, poses, scores)
    evaluated_ids = sorted({img["id"] for img in gt["images"]})
    stats = coco_keypoint_ap(gt, results, image_ids=evaluated_ids)
    metrics = {f"OKS_{k}": v for k, v in stats.items()}
    metrics.update(_pck_metrics(people, image_ids, poses, scores, crop_of, top_down))
    return results, metrics


def _attach_originals(samples: list[dict], source: Sequence) -> None:
    """Give each kept sample its original image, ground truth and per-person OKS (for pictures).

    The samples come from the first batches, i.e. the first images of ``source``; each gets
    ``original = {"image", "gt" (P, K, 3), "oks" (P,)}``: the OKS of each scorable person with the
    sample's predictions (top-down: the cropped person only, the others NaN), NaN for a person
    without labelled keypoints.
    """
    wanted = {s["image_id"] for s in samples}
    found: dict[int, dict] = {}
    for i in range(len(source)):
        if len(found) == len(wanted):
            break
        example = source[i]
        image_id = int(example[schema.IMAGE_ID])
        if image_id in wanted:
            found.setdefault(image_id, example)
    for sample in samples:
        example = found[sample["image_id"]]
        keypoints = np.asarray(example[schema.KEYPOINTS], np.float64).reshape(-1, 17, 3)
        areas = np.asarray(example[schema.AREA], np.float64).reshape(-1)
        keep = ~np.asarray(example[schema.IGNORE], bool).reshape(-1)
        poses = np.asarray(sample["original_poses"]).reshape(-1, skeleton.NUM_KEYPOINTS, 3)
        oks = np.full(len(keypoints), np.nan)
        for p in np.flatnonzero(keep & (keypoints[..., 2] > 0).any(axis=1)):
            if sample["person_index"] >= 0 and p != sample["person_index"]:
                continue
            oks[p] = max((_oks(pose, keypoints[p], areas[p]) for pose in poses), default=0.0)
        sample["original"] = {
            "image": np.asarray(example[schema.IMAGE]),
            "gt": keypoints[keep],
            "oks": oks[keep],
        }


def evaluate_people(
    find_people: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    source: Sequence,
    *,
    num_images: int | None = None,
    gt: dict | None = None,
    progress: Callable | None = None,
) -> EvalOutput:
    """Evaluate a whole-image system, one image at a time: ``image -> (poses, scores)``.

    For systems that are not one network on one batch layout, e.g. a person detector followed
    by a top-down pose network (:class:`posejax.inference.detection.DetectThenEstimate`): the
    caller composes the system, the evaluator only scores what it returns, with the metrics of
    :func:`evaluate` for keypoints (every returned person is a detection, matched to the ground
    truth as bottom-up predictions are) and the time per image (the first image, which pays for
    compilation, excluded).

    Args:
      find_people: ``(H, W, 3) uint8 -> (poses (P, K, 3) original-image pixels, scores (P,))``.
      source: random-access split in the stored example layout.
      num_images: the image prefix evaluated (all images when None).
      gt: precomputed COCO ground truth of that prefix.
      progress: wraps the image iterator (e.g. ``tqdm``); None: no progress display.
    """
    subset = ImagePrefix(source, num_images)
    if gt is None:
        gt = split_to_coco(subset)
    image_ids, poses_all, scores_all = [], [], []
    seconds = []
    indices = range(len(subset)) if progress is None else progress(range(len(subset)))
    for i in indices:
        example = subset[i]
        t0 = time.perf_counter()
        poses, scores = find_people(np.asarray(example[schema.IMAGE]))
        seconds.append(time.perf_counter() - t0)
        image_ids.append(int(example[schema.IMAGE_ID]))
        poses_all.append(np.asarray(poses, np.float64).reshape(-1, skeleton.NUM_KEYPOINTS, 3))
        scores_all.append(np.asarray(scores, np.float64).reshape(-1))
    people = _people_table(subset)
    results, metrics = _keypoint_metrics(gt, people, image_ids, poses_all, scores_all, {}, False)
    found = sum(len(s) for s in scores_all)
    metrics["people_found_ratio"] = found / len(people.keys) if people.keys else float("nan")
    timed = seconds[1:]
    metrics["ms_per_image"] = 1000.0 * float(np.mean(timed)) if timed else float("nan")
    metrics["num_images"] = float(len(subset))
    return EvalOutput(metrics=metrics, results=results, gt=gt, samples=[])


@dataclasses.dataclass
class _PeopleTable:
    """Scorable ground-truth people (not ignored, >= 1 labelled keypoint) of a source."""

    keys: list[tuple[int, int]]  # (image_id, person index in the example)
    keypoints: np.ndarray  # (N, K, 3)
    boxes: np.ndarray  # (N, 4)
    areas: np.ndarray  # (N,)
    native: np.ndarray | None = None  # (N, Kn, 3) the dataset's own joints, when stored
    head_boxes: np.ndarray | None = None  # (N, 4) head boxes (MPII), when stored


def _people_table(source: Sequence) -> _PeopleTable:
    keys, kps, boxes, areas, native, heads = [], [], [], [], [], []
    for i in range(len(source)):
        ex = source[i]
        ignore = np.asarray(ex["ignore"], bool)
        for p, person in enumerate(np.asarray(ex["keypoints"], np.float64)):
            if ignore[p] or not (person[:, 2] > 0).any():
                continue
            keys.append((int(ex["image_id"]), p))
            kps.append(person)
            boxes.append(np.asarray(ex["boxes"][p], np.float64))
            areas.append(float(ex["area"][p]))
            if schema.NATIVE_KEYPOINTS in ex:
                native.append(np.asarray(ex[schema.NATIVE_KEYPOINTS][p], np.float64))
            if schema.HEAD_BOXES in ex:
                heads.append(np.asarray(ex[schema.HEAD_BOXES][p], np.float64))
    k = skeleton.NUM_KEYPOINTS
    return _PeopleTable(
        keys,
        np.asarray(kps).reshape(-1, k, 3),
        np.asarray(boxes).reshape(-1, 4),
        np.asarray(areas).reshape(-1),
        native=np.asarray(native) if native else None,
        head_boxes=np.asarray(heads).reshape(-1, 4) if heads else None,
    )


def _oks(pred: np.ndarray, gt_kps: np.ndarray, area: float) -> float:
    labelled = gt_kps[:, 2] > 0
    if not labelled.any():
        return 0.0
    var = (2 * skeleton.COCO_SIGMAS) ** 2
    d2 = ((pred[:, :2] - gt_kps[:, :2]) ** 2).sum(-1)
    e = d2 / var / (max(area, 1.0) + np.spacing(1)) / 2
    return float(np.exp(-e)[labelled].mean())


def _pck_metrics(people: _PeopleTable, image_ids, poses, scores, crop_of, top_down):
    if not people.keys:
        return {"PCK@0.2": float("nan"), "PCK@0.2_torso": float("nan")}
    n, k = len(people.keys), skeleton.NUM_KEYPOINTS
    pred_xy = np.full((n, k, 2), np.inf)  # never-predicted joints count as wrong
    if top_down:
        for row, key in enumerate(people.keys):
            j = crop_of.get(key)
            if j is not None and len(poses[j]):
                pred_xy[row] = poses[j][0, :, :2]
    else:
        by_image: dict[int, list[int]] = {}
        for row, (image_id, _) in enumerate(people.keys):
            by_image.setdefault(image_id, []).append(row)
        for j, image_id in enumerate(image_ids):
            rows = by_image.get(image_id, [])
            taken: set[int] = set()
            for p in np.argsort(-scores[j]):  # greedy OKS matching, best-scored people first
                best, best_oks = None, 0.0
                for row in rows:
                    if row not in taken:
                        value = _oks(poses[j][p], people.keypoints[row], people.areas[row])
                        if value > best_oks:
                            best, best_oks = row, value
                if best is not None:
                    taken.add(best)
                    pred_xy[best] = poses[j][p][:, :2]
    box_norm = bbox_size(people.boxes)
    mean_box, per_joint = pck(pred_xy, people.keypoints, box_norm, alpha=0.2)
    mean_torso, _ = pck(pred_xy, people.keypoints, torso_size(people.keypoints), alpha=0.2)
    out = {"PCK@0.2": mean_box, "PCK@0.2_torso": mean_torso}
    if people.native is not None:  # the dataset's own metric on its own joints (MPII, LSP)
        out.update(dataset_metrics(people.native, pred_xy, head_boxes=people.head_boxes))
    out.update(
        {
            f"PCK@0.2/{name}": float(v)
            for name, v in zip(skeleton.COCO_KEYPOINTS, per_joint, strict=True)
        }
    )
    return out
