"""COCO keypoint OKS AP/AR and box AP/AR through pycocotools' COCOeval (never re-implemented)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

STAT_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APm",
    "APl",
    "AR",
    "AR50",
    "AR75",
    "ARm",
    "ARl",
)
# COCOeval's twelve box statistics (iouType="bbox" also splits out small people and counts
# recall at 1, 10 and 100 detections per image).
BOX_STAT_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


def _load_json(obj: Any) -> Any:
    if isinstance(obj, str | os.PathLike):
        with open(obj) as f:
            return json.load(f)
    return obj


def coco_keypoint_ap(
    gt_json: str | os.PathLike | dict,
    results_json: str | os.PathLike | Sequence[dict],
    *,
    sigmas: np.ndarray | None = None,
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """OKS-based keypoint AP/AR of ``results_json`` against ``gt_json`` with ``COCOeval``.

    Args:
      gt_json: COCO keypoints ground truth, as a path or an already-loaded dict.
      results_json: detections in the COCO results format (``image_id``, ``category_id``,
        ``keypoints`` as 3K numbers, ``score``), as a path or a list of dicts.
      sigmas: per-keypoint OKS constants; COCOeval's COCO-17 defaults when None.
      image_ids: evaluate on these images only (default: every image of the ground truth).
      verbose: print COCOeval's summary table.

    Returns:
      The ten standard statistics by name: ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl``.
      With no detections at all every statistic is 0.0 (COCOeval cannot load an empty list).

    References:
      Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014; the keypoint evaluation
      (OKS) of the COCO keypoint challenge.
    """
    return _cocoeval(
        gt_json, results_json, "keypoints", sigmas=sigmas, image_ids=image_ids, verbose=verbose
    )


def coco_box_ap(
    gt_json: str | os.PathLike | dict,
    results_json: str | os.PathLike | Sequence[dict],
    *,
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """COCO box AP/AR (``iouType="bbox"``) of person boxes, by :data:`BOX_STAT_NAMES`.

    ``results_json`` holds ``image_id``, ``category_id``, ``bbox`` ``(x, y, w, h)`` and ``score``
    per detection (:func:`boxes_to_coco_results`). Area ranges use the ground truth's ``area``.
    """
    return _cocoeval(gt_json, results_json, "bbox", image_ids=image_ids, verbose=verbose)


def _cocoeval(gt_json, results_json, iou_type, *, sigmas=None, image_ids=None, verbose=False):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = copy.deepcopy(_load_json(gt_json))
    results = list(_load_json(results_json))
    names = STAT_NAMES if iou_type == "keypoints" else BOX_STAT_NAMES
    if not results:
        return dict.fromkeys(names, 0.0)
    for ann in gt.get("annotations", []):
        # COCOeval's ignore logic reads `iscrowd`; COCO files may store it as a bool.
        ann["iscrowd"] = int(ann.get("iscrowd", 0))
        if "area" not in ann:
            x, y, w, h = ann["bbox"]
            ann["area"] = float(w * h)

    quiet = contextlib.redirect_stdout(io.StringIO()) if not verbose else contextlib.nullcontext()
    with quiet:
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # COCOeval marks "no ground truth in this area range" with -1; keep it (it is honest).
    return {name: float(v) for name, v in zip(names, evaluator.stats, strict=True)}


def predictions_to_coco_results(
    image_ids: Sequence[int],
    poses: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    *,
    category_id: int = 1,
) -> list[dict]:
    """Per-image ``(P, K, 3)`` poses (original-image pixels) -> COCO results list.

    Keypoints with score 0 (not found) are written with visibility 0 at (0, 0); COCOeval does
    not read the third number of detections, so this only documents what the decoder said.
    """
    results = []
    for image_id, image_poses, image_scores in zip(image_ids, poses, scores, strict=True):
        for pose, score in zip(image_poses, image_scores, strict=True):
            kps = np.asarray(pose, dtype=np.float64).copy()
            kps[kps[:, 2] <= 0, :2] = 0.0
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": category_id,
                    "keypoints": [round(float(v), 3) for v in kps.reshape(-1)],
                    "score": float(score),
                }
            )
    return results


def boxes_to_coco_results(
    image_ids: Sequence[int],
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    *,
    category_id: int = 1,
) -> list[dict]:
    """Per-image ``(P, 4)`` ``(x, y, w, h)`` boxes (original-image pixels) -> COCO results."""
    results = []
    for image_id, image_boxes, image_scores in zip(image_ids, boxes, scores, strict=True):
        for box, score in zip(np.asarray(image_boxes).reshape(-1, 4), image_scores, strict=True):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": category_id,
                    "bbox": [round(float(v), 3) for v in box],
                    "score": float(score),
                }
            )
    return results


def write_results(results: list[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return path
