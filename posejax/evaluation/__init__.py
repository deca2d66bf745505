"""Metrics: PCK, COCO OKS AP/AR through pycocotools, mIoU; and the evaluation loop."""

from posejax.evaluation.coco_metrics import (
    STAT_NAMES,
    coco_keypoint_ap,
    predictions_to_coco_results,
)
from posejax.evaluation.keypoint_metrics import (
    bbox_size,
    confusion_matrix,
    mean_iou,
    pck,
    torso_size,
)

__all__ = [
    "STAT_NAMES",
    "bbox_size",
    "coco_keypoint_ap",
    "confusion_matrix",
    "mean_iou",
    "pck",
    "predictions_to_coco_results",
    "torso_size",
]
