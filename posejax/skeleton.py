"""Keypoint vocabulary shared by every dataset, formulation and drawing routine.

All of posejax works on the COCO-17 keypoints. Datasets with other skeletons (MPII, LSP) are
converted to COCO-17 by their builders, which keep the native joints beside for their own
metrics (see ``posejax.data``).

Conventions (used everywhere in the code base):

* Keypoints are ``(..., K, 3)`` arrays of ``(x, y, v)`` with COCO visibility: ``v = 2`` labelled
  and visible, ``v = 1`` labelled but occluded, ``v = 0`` not labelled / outside the image, stored
  as ``(0, 0, 0)``.
* Pixel coordinates put the *centre* of pixel ``(row r, col c)`` at ``(x, y) = (c, r)``; an image
  of width ``W`` spans ``x`` in ``[-0.5, W - 0.5]``. OpenCV drawing uses the same convention.
* Boxes are ``(x, y, w, h)`` like COCO.

References:
  Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014 (keypoint definition and
  the OKS per-keypoint constants ``sigma_i`` published with the COCO keypoint evaluation).
"""

from __future__ import annotations

import numpy as np

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINTS)

# Left/right pairs: a horizontal flip maps keypoint a to b and b to a.
COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (3, 4),
    (5, 6),
    (7, 8),
    (9, 10),
    (11, 12),
    (13, 14),
    (15, 16),
)

# The 19 limbs of the COCO keypoint category's "skeleton" field, converted to 0-based indices.
# The graph has cycles (shoulders-hips form a loop; eyes-ears-shoulders join the head to both
# shoulders), which PAF assembly must handle (see posejax.parsing).
COCO_LIMBS: tuple[tuple[int, int], ...] = (
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
)
NUM_LIMBS = len(COCO_LIMBS)

# Skip connections that keep a person truncated at a shoulder or a hip in one piece for PAF
# parsing: elbow-hip and shoulder-knee on each side. Without them the arm of a person whose
# shoulder is outside the frame (or the leg of one cut at the hip) is a separate fragment that
# no parser can attach (unlabelled keypoints get no field); on synthetic_people they lift the
# perfect-map ceiling by ~4 OKS AP (experiments/e1_formulations/README.md).
PAF_SKIP_LIMBS: tuple[tuple[int, int], ...] = ((7, 11), (8, 12), (5, 13), (6, 14))

# Per-keypoint OKS constants sigma_i from the COCO keypoint evaluation (cocoeval.py uses these).
COCO_SIGMAS: np.ndarray = (
    np.array(
        [
            0.26,
            0.25,
            0.25,
            0.35,
            0.35,
            0.79,
            0.79,
            0.72,
            0.72,
            0.62,
            0.62,
            1.07,
            1.07,
            0.87,
            0.87,
            0.89,
            0.89,
        ],
        dtype=np.float64,
    )
    / 10.0
)


def flip_permutation(num_keypoints: int = NUM_KEYPOINTS, pairs=COCO_FLIP_PAIRS) -> np.ndarray:
    """Index array ``perm`` such that ``flipped[..., k, :] = original[..., perm[k], :]``."""
    perm = np.arange(num_keypoints)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


COCO_FLIP_PERMUTATION: np.ndarray = flip_permutation()

# Torso joints used for torso-normalised PCK (the LSP convention: left shoulder to right hip).
TORSO_PAIR: tuple[int, int] = (5, 12)

# Body-part classes for part segmentation (0 is background). Each non-head, non-torso part is the
# capsule around one limb; the head is the disc around the face keypoints; the torso is the
# quadrilateral shoulders-hips.
BODY_PARTS: tuple[str, ...] = (
    "background",
    "head",
    "torso",
    "left_upper_arm",
    "right_upper_arm",
    "left_lower_arm",
    "right_lower_arm",
    "left_upper_leg",
    "right_upper_leg",
    "left_lower_leg",
    "right_lower_leg",
)
NUM_BODY_PARTS = len(BODY_PARTS)

# Limb parts: part class -> (keypoint a, keypoint b) of the capsule's segment.
BODY_PART_SEGMENTS: dict[int, tuple[int, int]] = {
    3: (5, 7),
    4: (6, 8),
    5: (7, 9),
    6: (8, 10),
    7: (11, 13),
    8: (12, 14),
    9: (13, 15),
    10: (14, 16),
}
HEAD_KEYPOINTS: tuple[int, ...] = (0, 1, 2, 3, 4)
TORSO_KEYPOINTS: tuple[int, ...] = (5, 6, 12, 11)  # polygon order

BODY_PART_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((3, 4), (5, 6), (7, 8), (9, 10))
BODY_PART_FLIP_PERMUTATION: np.ndarray = flip_permutation(NUM_BODY_PARTS, BODY_PART_FLIP_PAIRS)

# Drawing colours (RGB) per limb: left side warm, right side cool, centre green.
_LEFT, _RIGHT, _CENTRE = (255, 128, 0), (0, 160, 255), (0, 200, 80)


def limb_colour(a: int, b: int) -> tuple[int, int, int]:
    """RGB drawing colour of the limb between keypoints ``a`` and ``b``."""
    left = {1, 3, 5, 7, 9, 11, 13, 15}
    right = {2, 4, 6, 8, 10, 12, 14, 16}
    if a in left and b in left:
        return _LEFT
    if a in right and b in right:
        return _RIGHT
    return _CENTRE


COCO_LIMB_COLOURS: tuple[tuple[int, int, int], ...] = tuple(
    limb_colour(a, b) for a, b in COCO_LIMBS
)
