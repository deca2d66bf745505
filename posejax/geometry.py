"""Coordinate conventions shared by targets, decoders, augmentations and runners.

Pixel centres sit at integer coordinates (see ``posejax.skeleton``). A map with output stride
``s`` has cell ``j`` covering input pixels ``[j s, j s + s - 1]``, so its centre is at input
coordinate ``j s + (s - 1) / 2``. Encoders and decoders both go through the two functions
below, which is what makes encode -> decode round-trip exactly.
"""

from __future__ import annotations

import numpy as np


def image_to_map(xy, stride: int):
    """Input-pixel coordinates -> output-map coordinates (works on NumPy and jnp arrays)."""
    return (xy - (stride - 1) / 2.0) / stride


def map_to_image(xy, stride: int):
    """Output-map coordinates -> input-pixel coordinates (inverse of :func:`image_to_map`)."""
    return xy * stride + (stride - 1) / 2.0


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``(2, 3)`` affine ``matrix`` to ``points`` of shape ``(..., 2)``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine map."""
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def poses_to_original(poses: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Decoded poses in network-input pixels -> original-image pixels.

    The one back-projection of the evaluator and the runners: each input was made from the
    original image by the affine ``transform`` (the batch's ``"transform"``), so the poses go back
    through its inverse.

    Args:
      poses: ``(..., K, 3)`` ``(x, y, score)`` in input pixels (e.g. ``(P, K, 3)``).
      transform: ``(2, 3)`` affine, original-image pixels -> input pixels.

    Returns:
      ``(..., K, 3)`` float64 copy in original-image pixels; joints the decoder did not find
      (score ``<= 0``) are ``(0, 0, 0)``.
    """
    poses = np.array(poses, dtype=np.float64, copy=True)
    poses[..., :2] = apply_affine(poses[..., :2], invert_affine(transform))
    poses[poses[..., 2] <= 0] = 0.0
    return poses


def boxes_to_original(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``(..., 4)`` ``(x, y, w, h)`` boxes in input pixels -> original-image pixels.

    The axis-aligned hull of the four back-projected corners (exact for the scale + translation
    of evaluation transforms; the hull under a rotation).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    x0, y0 = boxes[..., 0], boxes[..., 1]
    x1, y1 = x0 + boxes[..., 2], y0 + boxes[..., 3]
    corners = np.stack(
        [np.stack(c, axis=-1) for c in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))], axis=-2
    )
    back = apply_affine(corners, invert_affine(transform))  # (..., 4, 2)
    low, high = back.min(axis=-2), back.max(axis=-2)
    return np.concatenate([low, high - low], axis=-1)
