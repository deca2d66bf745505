"""Percentage of Correct Keypoints (PCK) and dense mIoU.

Shape legend: ``N`` people (one row per ground-truth person), ``K`` keypoints, ``C`` classes.
"""

from __future__ import annotations

import numpy as np

from posejax import skeleton


def pck(
    pred_xy: np.ndarray, gt: np.ndarray, norm: np.ndarray, *, alpha: float = 0.2
) -> tuple[float, np.ndarray]:
    """PCK@alpha: a keypoint is correct when its error is below ``alpha * norm``.

    Args:
      pred_xy: ``(N, K, 2)`` predicted coordinates.
      gt: ``(N, K, 3)`` ground truth ``(x, y, v)``; only labelled joints (``v > 0``) count.
      norm: ``(N,)`` per-person normaliser (bbox size, torso size, head size, ...). People with a
        non-positive or non-finite normaliser are excluded.
      alpha: threshold as a fraction of ``norm``.

    Returns:
      ``(mean, per_joint)``: the fraction of correct labelled keypoints over all people, and
      ``(K,)`` per-joint fractions (NaN for a joint never labelled).

    References:
      Yang & Ramanan, "Articulated Human Detection with Flexible Mixtures of Parts", TPAMI 2013
      (PCK); Andriluka et al., "2D Human Pose Estimation: New Benchmark and State of the Art
      Analysis", CVPR 2014 (PCKh).
    """
    pred_xy = np.asarray(pred_xy, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    norm = np.asarray(norm, dtype=np.float64)
    if pred_xy.shape[:2] != gt.shape[:2] or norm.shape != gt.shape[:1]:
        raise ValueError(
            f"pck: shapes do not match: pred {pred_xy.shape}, gt {gt.shape}, norm {norm.shape}"
        )
    labelled = (gt[..., 2] > 0) & (np.isfinite(norm) & (norm > 0))[:, None]
    err = np.linalg.norm(pred_xy - gt[..., :2], axis=-1)
    correct = (err <= alpha * norm[:, None]) & labelled
    total = labelled.sum()
    mean = float(correct.sum() / total) if total else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = correct.sum(0) / labelled.sum(0)
    return mean, per_joint


def bbox_size(boxes_xywh: np.ndarray) -> np.ndarray:
    """PCK normaliser from boxes: the larger box side, ``(N, 4) -> (N,)``."""
    boxes_xywh = np.asarray(boxes_xywh, dtype=np.float64)
    return np.maximum(boxes_xywh[:, 2], boxes_xywh[:, 3])


def torso_size(gt: np.ndarray, pair: tuple[int, int] = skeleton.TORSO_PAIR) -> np.ndarray:
    """Torso diameter (left shoulder to right hip, the LSP convention), NaN when unlabelled."""
    a, b = pair
    gt = np.asarray(gt, dtype=np.float64)
    size = np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1)
    labelled = (gt[:, a, 2] > 0) & (gt[:, b, 2] > 0)
    return np.where(labelled, size, np.nan)


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` counts of (target, predicted) class pairs; negative targets are ignored."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    keep = target >= 0
    index = target[keep] * num_classes + pred[keep]
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(confusion: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean intersection-over-union over classes present in prediction or target."""
    confusion = np.asarray(confusion, dtype=np.float64)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return float(np.nanmean(iou)), iou
