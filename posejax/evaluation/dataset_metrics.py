"""Each dataset's own metric on its own joints: MPII PCKh and LSP PCK@0.2 (torso).

posejax predicts COCO-17 keypoints. The MPII and LSP builders keep their datasets' joints in
``native_keypoints`` (``(P, 16, 3)`` MPII order, ``(P, 14, 3)`` LSP order, see
:mod:`posejax.data.mpii` and :mod:`posejax.data.lsp`), and this module scores predictions on
those joints with the benchmarks' own rules, so that numbers can be set beside the literature's.

**COCO-17 predictions -> native joints** (:func:`native_from_coco`):

* joints with a COCO equivalent (shoulders, elbows, wrists, hips, knees, ankles) are copied, by
  the inverse of the builders' ``COCO_FROM_MPII`` / ``COCO_FROM_LSP`` tables;
* MPII ``pelvis`` = midpoint of the COCO hips and MPII ``thorax`` = midpoint of the COCO
  shoulders. This is how MPII's annotations place them: on the five records of the mmpose MPII
  fixture the annotated pelvis and thorax lie within 0.02 head sizes of the hip and shoulder
  midpoints (the PCKh@0.5 tolerance is 0.5 head sizes);
* MPII ``upper_neck`` / ``head_top`` and LSP ``neck`` / ``head_top`` have no COCO equivalent and
  no rule that is close enough (the shoulder midpoint is 0.06-0.23 head sizes from MPII's upper
  neck, and only 84 % of the LSPet fixture's necks are within PCK@0.2 of it), so they are
  **not available** (``n/a``): NaN in the per-joint results and left out of every mean.

**MPII PCKh@alpha** (:func:`mpii_pckh`; Andriluka et al., CVPR 2014): a joint is correct when its
error is at most ``alpha`` times the person's head size, ``0.6 x`` the diagonal of the annotated
head box (``SC_BIAS = 0.6`` in the benchmark's evaluation code). Every labelled joint counts,
occluded or not. The mean is MPII's "Mean": all joints except pelvis and thorax, pooled over
people (correct / labelled), restricted here to the joints that are available.

**Head-size proxy** (:func:`mpii_head_sizes`): the HRNet/mmpose JSON release of MPII has no head
boxes. There the head size is estimated from the ``upper_neck``-``head_top`` distance ``d`` as
``0.6 x 1.25 d = 0.75 d``, and the metrics say which fraction of people used the proxy
(``MPII_PCKh/head_size_proxy_fraction``). The factor 1.25 (head-box diagonal per head segment
length) comes from how MPII's head boxes relate to the two head joints: upper neck and head top
sit on the bottom and top edges of the head box, at its horizontal centre line (in the released
record for image 005147875 the box is x 749-845, y 130-256 and the joints are (790.6, 130.0)
and (803.4, 256.0)), so the box height is the vertical extent of ``d`` (``~= d`` for upright
heads), and boxes are about 0.75 times as wide as tall (that record: 96 x 126 px; adult head
breadth / head height is 0.65-0.75), giving a diagonal of ``d sqrt(1 + 0.75^2) = 1.25 d``.
Tilted heads and other box shapes make the true ratio vary by roughly +-10 %, which moves the
threshold by as much: PCKh with the proxy is close to, not equal to, the official number.

**LSP PCK@0.2** (:func:`lsp_pck`; Yang & Ramanan, TPAMI 2013, person-centric evaluation as used on
LSP): a joint is correct when its error is at most ``0.2 x`` the torso size, the distance from
the left shoulder to the right hip (the convention of ``posejax.skeleton.TORSO_PAIR``); people
without both torso joints are left out.

:func:`dataset_metrics` is the one entry point for the evaluator: it takes matched ground truth
and COCO-17 predictions, recognises the dataset from the number of native joints (16: MPII, 14:
LSP) and returns a flat dict of metrics (prefix ``MPII_`` or ``LSP_``).

Shape legend: ``N`` ground-truth people, ``Kn`` native joints, ``K = 17`` COCO keypoints.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from posejax import skeleton
from posejax.data.lsp import COCO_FROM_LSP, LSP_JOINTS
from posejax.data.mpii import COCO_FROM_MPII, MPII_JOINTS
from posejax.evaluation.keypoint_metrics import pck

# PCKh: head size = SC_BIAS x head-box diagonal (Andriluka et al. 2014, evaluation code).
PCKH_HEAD_BOX_FACTOR = 0.6
# Head-box diagonal per upper_neck-head_top distance, for the proxy (see the module docstring).
HEAD_DIAGONAL_PER_SEGMENT = 1.25
PCKH_ALPHAS: tuple[float, ...] = (0.5, 0.1)
LSP_ALPHA = 0.2


@dataclasses.dataclass(frozen=True)
class NativeSkeleton:
    """A dataset's own joints and how COCO-17 predictions map onto them.

    Attributes:
      name: metric prefix (``"MPII"``, ``"LSP"``).
      joints: native joint names in the dataset's order.
      coco_from_native: ``(17,)`` native joint stored as each COCO keypoint (-1: none).
      midpoints: native joint -> the two COCO keypoints whose midpoint estimates it.
      mean_excludes: native joints left out of the benchmark's mean.
      groups: the benchmark's summary columns: name -> native joints averaged.
    """

    name: str
    joints: tuple[str, ...]
    coco_from_native: tuple[int, ...]
    midpoints: Mapping[int, tuple[int, int]] = dataclasses.field(default_factory=dict)
    mean_excludes: tuple[int, ...] = ()
    groups: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, name: str) -> int:
        return self.joints.index(name)

    @property
    def available(self) -> np.ndarray:
        """``(Kn,)`` bool: joints a COCO-17 prediction provides (copied or derived)."""
        out = np.zeros(self.num_joints, bool)
        out[[j for j in self.coco_from_native if j >= 0]] = True
        out[list(self.midpoints)] = True
        return out


def _pairs(skel_joints: Sequence[str], stem: str) -> tuple[int, ...]:
    return tuple(skel_joints.index(f"{side}_{stem}") for side in ("left", "right"))


MPII = NativeSkeleton(
    name="MPII",
    joints=MPII_JOINTS,
    coco_from_native=COCO_FROM_MPII,
    midpoints={
        MPII_JOINTS.index("pelvis"): (11, 12),  # COCO left_hip, right_hip
        MPII_JOINTS.index("thorax"): (5, 6),  # COCO left_shoulder, right_shoulder
    },
    mean_excludes=(MPII_JOINTS.index("pelvis"), MPII_JOINTS.index("thorax")),
    # The columns of the MPII leaderboard; "Head" is the head top (HRNet's evaluate()).
    groups={
        "Head": (MPII_JOINTS.index("head_top"),),
        "Shoulder": _pairs(MPII_JOINTS, "shoulder"),
        "Elbow": _pairs(MPII_JOINTS, "elbow"),
        "Wrist": _pairs(MPII_JOINTS, "wrist"),
        "Hip": _pairs(MPII_JOINTS, "hip"),
        "Knee": _pairs(MPII_JOINTS, "knee"),
        "Ankle": _pairs(MPII_JOINTS, "ankle"),
    },
)

LSP = NativeSkeleton(
    name="LSP",
    joints=LSP_JOINTS,
    coco_from_native=COCO_FROM_LSP,
    # The columns of LSP result tables; "Head" averages neck and head top.
    groups={
        "Head": (LSP_JOINTS.index("neck"), LSP_JOINTS.index("head_top")),
        "Shoulder": _pairs(LSP_JOINTS, "shoulder"),
        "Elbow": _pairs(LSP_JOINTS, "elbow"),
        "Wrist": _pairs(LSP_JOINTS, "wrist"),
        "Hip": _pairs(LSP_JOINTS, "hip"),
        "Knee": _pairs(LSP_JOINTS, "knee"),
        "Ankle": _pairs(LSP_JOINTS, "ankle"),
    },
)

# Recognised by the number of native joints (the builders store no dataset name per example).
SKELETONS_BY_NUM_JOINTS: dict[int, NativeSkeleton] = {
    MPII.num_joints: MPII,
    LSP.num_joints: LSP,
}

# LSP torso: left shoulder to right hip, as posejax.skeleton.TORSO_PAIR is for COCO-17.
LSP_TORSO_PAIR: tuple[int, int] = (LSP_JOINTS.index("left_shoulder"), LSP_JOINTS.index("right_hip"))


def native_from_coco(pred_coco: np.ndarray, native: NativeSkeleton) -> np.ndarray:
    """COCO-17 predictions -> the dataset's joints (see the module docstring for the rules).

    Args:
      pred_coco: ``(N, 17, C)`` predicted ``(x, y, ...)``; only ``x, y`` are read. A person
        without a prediction may be all ``inf``/NaN: it stays wrong on every joint.
      native: the dataset's :class:`NativeSkeleton`.

    Returns:
      ``(N, Kn, 2)`` float64; joints that are not available (``native.available``) are NaN.
    """
    pred = np.asarray(pred_coco, dtype=np.float64)[..., :2]
    if pred.ndim != 3 or pred.shape[1] != skeleton.NUM_KEYPOINTS:
        raise ValueError(f"native_from_coco: expected (N, 17, C) predictions, got {pred.shape}")
    out = np.full((pred.shape[0], native.num_joints, 2), np.nan)
    for coco_index, native_index in enumerate(native.coco_from_native):
        if native_index >= 0:
            out[:, native_index] = pred[:, coco_index]
    for native_index, (a, b) in native.midpoints.items():
        with np.errstate(invalid="ignore"):  # inf + inf stays inf; inf - inf would be NaN
            out[:, native_index] = 0.5 * (pred[:, a] + pred[:, b])
    return out


def head_box_sizes(head_boxes: np.ndarray) -> np.ndarray:
    """PCKh head size from ``(N, 4)`` xywh head boxes: ``0.6 x`` diagonal; NaN for empty boxes."""
    boxes = np.asarray(head_boxes, dtype=np.float64).reshape(-1, 4)
    diagonal = np.hypot(boxes[:, 2], boxes[:, 3])
    return np.where(diagonal > 0, PCKH_HEAD_BOX_FACTOR * diagonal, np.nan)


def head_segment_sizes(
    native_gt: np.ndarray, *, head_diagonal_per_segment: float = HEAD_DIAGONAL_PER_SEGMENT
) -> np.ndarray:
    """Head-size proxy ``0.6 x head_diagonal_per_segment x |upper_neck - head_top|``.

    NaN for people without both joints labelled. See the module docstring for the factor.
    """
    gt = np.asarray(native_gt, dtype=np.float64)
    neck, top = MPII.index("upper_neck"), MPII.index("head_top")
    length = np.linalg.norm(gt[:, neck, :2] - gt[:, top, :2], axis=-1)
    labelled = (gt[:, neck, 2] > 0) & (gt[:, top, 2] > 0) & (length > 0)
    return np.where(labelled, PCKH_HEAD_BOX_FACTOR * head_diagonal_per_segment * length, np.nan)


def mpii_head_sizes(
    native_gt: np.ndarray,
    head_boxes: np.ndarray | None = None,
    *,
    head_diagonal_per_segment: float = HEAD_DIAGONAL_PER_SEGMENT,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-person PCKh head size: from the head box where there is one, else the proxy.

    Args:
      native_gt: ``(N, 16, 3)`` MPII joints.
      head_boxes: ``(N, 4)`` xywh head boxes, or None (the JSON release). All-zero rows (the
        ``.mat`` builder's "head box missing") fall back to the proxy.
      head_diagonal_per_segment: proxy factor (see :func:`head_segment_sizes`).

    Returns:
      ``(sizes, from_proxy)``: ``(N,)`` head sizes (NaN where neither is known) and ``(N,)`` bool.
    """
    proxy = head_segment_sizes(native_gt, head_diagonal_per_segment=head_diagonal_per_segment)
    if head_boxes is None:
        return proxy, np.isfinite(proxy)
    from_box = head_box_sizes(head_boxes)
    use_proxy = ~np.isfinite(from_box)
    return np.where(use_proxy, proxy, from_box), use_proxy & np.isfinite(proxy)


def _scores(
    pred: np.ndarray,
    gt: np.ndarray,
    norm: np.ndarray,
    native: NativeSkeleton,
    alpha: float,
    available: np.ndarray,
) -> tuple[float, np.ndarray]:
    """Pooled mean over the available joints of the benchmark's mean, and per-joint values."""
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape[:2] != gt.shape[:2] or gt.shape[1] != native.num_joints:
        raise ValueError(
            f"{native.name}: expected (N, {native.num_joints}, 2) predictions and "
            f"(N, {native.num_joints}, 3) ground truth, got {pred.shape} and {gt.shape}"
        )
    # A NaN prediction is wrong (comparisons with NaN are False), never silently dropped.
    _, per_joint = pck(pred, gt, norm, alpha=alpha)
    per_joint = np.where(available, per_joint, np.nan)
    in_mean = available.copy()
    in_mean[list(native.mean_excludes)] = False
    if not in_mean.any():
        return float("nan"), per_joint
    mean, _ = pck(pred[:, in_mean], gt[:, in_mean], norm, alpha=alpha)
    return mean, per_joint


def mpii_pckh(
    pred_native: np.ndarray,
    native_gt: np.ndarray,
    head_sizes: np.ndarray,
    *,
    alpha: float = 0.5,
    available: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """MPII PCKh@alpha on MPII's 16 joints.

    Args:
      pred_native: ``(N, 16, 2+)`` predictions in MPII joint order (original-image pixels).
      native_gt: ``(N, 16, 3)`` ground truth; every labelled joint (``v > 0``) counts.
      head_sizes: ``(N,)`` from :func:`mpii_head_sizes`; people with NaN are left out.
      alpha: threshold as a fraction of the head size (0.5 and 0.1 are reported).
      available: ``(16,)`` bool, joints the method predicts (default: all); the others are NaN
        in ``per_joint`` and left out of the mean.

    Returns:
      ``(mean, per_joint)``: the pooled fraction of correct labelled joints over MPII's "Mean"
      joints (all but pelvis and thorax) that are available, and ``(16,)`` per-joint values.

    References:
      Andriluka et al., "2D Human Pose Estimation: New Benchmark and State of the Art Analysis",
      CVPR 2014.
    """
    available = np.ones(MPII.num_joints, bool) if available is None else np.asarray(available)
    return _scores(pred_native, native_gt, head_sizes, MPII, alpha, available)


def lsp_torso_sizes(native_gt: np.ndarray) -> np.ndarray:
    """``(N,)`` LSP torso size, left shoulder to right hip; NaN where either is unlabelled."""
    gt = np.asarray(native_gt, dtype=np.float64)
    a, b = LSP_TORSO_PAIR
    size = np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1)
    return np.where((gt[:, a, 2] > 0) & (gt[:, b, 2] > 0) & (size > 0), size, np.nan)


def lsp_pck(
    pred_native: np.ndarray,
    native_gt: np.ndarray,
    *,
    alpha: float = LSP_ALPHA,
    available: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """LSP PCK@alpha (torso-normalised) on LSP's 14 joints.

    Args:
      pred_native: ``(N, 14, 2+)`` predictions in LSP joint order.
      native_gt: ``(N, 14, 3)`` ground truth; labelled joints (``v > 0``) count.
      alpha: threshold as a fraction of the torso size (:func:`lsp_torso_sizes`).
      available: ``(14,)`` bool, joints the method predicts (default: all).

    Returns:
      ``(mean, per_joint)``: pooled fraction of correct labelled available joints, ``(14,)``.

    References:
      Yang & Ramanan, "Articulated Human Detection with Flexible Mixtures of Parts", TPAMI 2013;
      Johnson & Everingham, "Clustered Pose and Nonlinear Appearance Models for Human Pose
      Estimation", BMVC 2010 (LSP).
    """
    available = np.ones(LSP.num_joints, bool) if available is None else np.asarray(available)
    return _scores(pred_native, native_gt, lsp_torso_sizes(native_gt), LSP, alpha, available)


def _alpha_name(alpha: float) -> str:
    return f"{alpha:g}"


def _joint_and_group_entries(
    prefix: str, native: NativeSkeleton, per_joint: np.ndarray
) -> dict[str, float]:
    out = {f"{prefix}/{name}": float(v) for name, v in zip(native.joints, per_joint, strict=True)}
    for group, joints in native.groups.items():
        values = per_joint[list(joints)]
        out[f"{prefix}/{group}"] = float(values.mean()) if np.isfinite(values).all() else math.nan
    return out


def dataset_metrics(
    native_gt: np.ndarray,
    pred_coco: np.ndarray,
    *,
    head_boxes: np.ndarray | None = None,
) -> dict[str, float]:
    """The dataset's own metrics for COCO-17 predictions matched to ground-truth people.

    Args:
      native_gt: ``(N, Kn, 3)`` the ground-truth people's ``native_keypoints`` (original pixels).
      pred_coco: ``(N, 17, 2+)`` each person's predicted COCO-17 keypoints in original pixels,
        in the same row order; ``inf`` (or NaN) for people nobody predicted.
      head_boxes: ``(N, 4)`` xywh head boxes (MPII ``.mat`` release) or None.

    Returns:
      MPII (``Kn = 16``): ``MPII_PCKh@0.5``, ``MPII_PCKh@0.1`` (means as in :func:`mpii_pckh`),
      ``MPII_PCKh@0.5/<joint>`` for the 16 joints, ``MPII_PCKh@0.5/<column>`` for the
      leaderboard columns (Head, Shoulder, ... Ankle), ``MPII_PCKh/head_size_proxy_fraction``
      and ``MPII_PCKh/num_mean_joints``. LSP (``Kn = 14``): ``LSP_PCK@0.2``, per joint and per
      column likewise, and ``LSP_PCK/num_mean_joints``. Joints COCO-17 cannot provide are NaN.
      An empty dict for other ``Kn`` (a dataset without a registered metric).
    """
    gt = np.asarray(native_gt, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[-1] != 3:
        raise ValueError(f"dataset_metrics: native_gt must be (N, Kn, 3), got {gt.shape}")
    native = SKELETONS_BY_NUM_JOINTS.get(gt.shape[1])
    if native is None:
        return {}
    pred = native_from_coco(pred_coco, native)
    if len(pred) != len(gt):
        raise ValueError(f"dataset_metrics: {len(pred)} predictions for {len(gt)} people")
    available = native.available
    in_mean = available.copy()
    in_mean[list(native.mean_excludes)] = False
    out: dict[str, float] = {}
    if native is MPII:
        sizes, from_proxy = mpii_head_sizes(gt, head_boxes)
        scored = np.isfinite(sizes)
        out["MPII_PCKh/head_size_proxy_fraction"] = (
            float(from_proxy[scored].mean()) if scored.any() else math.nan
        )
        for alpha in PCKH_ALPHAS:
            prefix = f"MPII_PCKh@{_alpha_name(alpha)}"
            mean, per_joint = mpii_pckh(pred, gt, sizes, alpha=alpha, available=available)
            out[prefix] = mean
            if alpha == PCKH_ALPHAS[0]:
                out.update(_joint_and_group_entries(prefix, native, per_joint))
        out["MPII_PCKh/num_mean_joints"] = float(in_mean.sum())
    else:
        prefix = f"LSP_PCK@{_alpha_name(LSP_ALPHA)}"
        mean, per_joint = lsp_pck(pred, gt, alpha=LSP_ALPHA, available=available)
        out[prefix] = mean
        out.update(_joint_and_group_entries(prefix, native, per_joint))
        out["LSP_PCK/num_mean_joints"] = float(in_mean.sum())
    return out


def per_joint_table(metrics: Mapping[str, float], prefix: str) -> str:
    """Markdown table of ``<prefix>/<name>`` entries (joints, then columns), ``n/a`` for NaN."""
    rows = [
        (key.split("/", 1)[1], value)
        for key, value in metrics.items()
        if key.startswith(prefix + "/")
    ]
    lines = [f"| {prefix} | % |", "|---|---|"]
    for name, value in rows:
        shown = "n/a" if not np.isfinite(value) else f"{100 * value:.1f}"
        lines.append(f"| {name} | {shown} |")
    mean = metrics.get(prefix)
    if mean is not None:
        lines.append(f"| Mean | {'n/a' if not np.isfinite(mean) else f'{100 * mean:.1f}'} |")
    return "\n".join(lines)
