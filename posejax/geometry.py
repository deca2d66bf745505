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
