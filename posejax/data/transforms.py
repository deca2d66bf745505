"""Geometry on one stored example: affine construction, flips and warping (NumPy + OpenCV).

Every augmentation of posejax is one ``(2, 3)`` affine map from original-image pixels to
network-input pixels, built by :func:`top_down_affine` (crop one person) or
:func:`bottom_up_affine` (fit the whole image), optionally composed with a horizontal mirror
(:func:`flip_affine`), and applied to every part of an example at once by :func:`warp_example`.

Pixel convention (see ``posejax.geometry``): the centre of pixel ``(row r, col c)`` is at
``(x, y) = (c, r)``, so an image of width ``W`` spans ``x`` in ``[-0.5, W - 0.5]`` and its centre
is at ``(W - 1) / 2``. ``cv2.warpAffine`` samples output pixel ``(c, r)`` at
``M^-1 (c, r)`` in source pixel units with the same convention, so the matrices built here are
passed to OpenCV unchanged; ``tests/data/test_transforms.py`` checks that a single bright pixel
lands where the affine sends its centre.

Shape legend: ``P`` people, ``K`` keypoints, ``H, W`` original image, ``h, w`` network input.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from posejax import geometry, skeleton
from posejax.data import schema

# Keys of an example that warp_example transforms; anything else (e.g. native_keypoints, whose
# left/right pairs are dataset-specific) is not carried into the warped example.
_DENSE_FLIP_PERMUTATIONS: dict[str, np.ndarray | None] = {
    schema.PART_MASK: skeleton.BODY_PART_FLIP_PERMUTATION,
    schema.INSTANCE_MASK: None,  # person ids do not change sides
}


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One draw of the random geometric augmentation (the identity by default).

    Attributes:
      scale: magnification on top of the crop/fit; ``> 1`` makes people larger in the input.
      rotation_deg: rotation of the content about the input centre, counter-clockwise as seen.
      shift: ``(dx, dy)`` translation of the content as a fraction of the input ``(w, h)``.
      flip: mirror the input horizontally (and swap left/right labels).
    """

    scale: float = 1.0
    rotation_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)
    flip: bool = False


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random geometric augmentation used for training.

    Attributes:
      enabled: when False, :meth:`sample` always returns the identity.
      scale_range: ``(lo, hi)`` of the uniform magnification factor.
      max_rotation_deg: rotation is uniform in ``[-max_rotation_deg, max_rotation_deg]``.
      flip_prob: probability of a horizontal flip.
      translate_fraction: each of ``dx, dy`` is uniform in ``[-t, t]`` (fraction of input size).
    """

    enabled: bool = True
    scale_range: tuple[float, float] = (0.75, 1.25)
    max_rotation_deg: float = 30.0
    flip_prob: float = 0.5
    translate_fraction: float = 0.1

    #: uniform numbers one draw of :meth:`from_uniforms` reads
    DRAWS = 5

    def sample(self, rng: np.random.Generator) -> Augmentation:
        """Draws one :class:`Augmentation` (always consumes the same number of random draws)."""
        return self.from_uniforms(rng.random((1, self.DRAWS)))[0]

    def from_uniforms(self, uniforms: np.ndarray) -> list[Augmentation]:
        """One :class:`Augmentation` per row of ``(n, DRAWS)`` numbers uniform in ``[0, 1)``
        (scale, rotation, shift x, shift y, flip); the identity for every row when disabled."""
        u = np.asarray(uniforms, dtype=np.float64).reshape(-1, self.DRAWS)
        if not self.enabled:
            return [Augmentation()] * len(u)
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * u[:, 0]
        rotation = self.max_rotation_deg * (2.0 * u[:, 1] - 1.0)
        shift = self.translate_fraction * (2.0 * u[:, 2:4] - 1.0)
        flip = u[:, 4] < self.flip_prob
        return [
            Augmentation(scale=s, rotation_deg=r, shift=(dx, dy), flip=f)
            for s, r, (dx, dy), f in zip(
                scale.tolist(), rotation.tolist(), shift.tolist(), flip.tolist(), strict=True
            )
        ]


def _similarity(
    src_centre: tuple[float, float],
    input_size: tuple[int, int],
    zoom: float,
    rotation_deg: float,
    shift: tuple[float, float],
) -> np.ndarray:
    """``q = zoom R (p - src_centre) + input_centre + shift * (w, h)`` as a ``(2, 3)`` matrix."""
    h, w = input_size
    theta = math.radians(rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    # y points down, so a counter-clockwise turn on screen is [[cos, sin], [-sin, cos]].
    linear = zoom * np.array([[cos, sin], [-sin, cos]], dtype=np.float64)
    dst_centre = np.array([(w - 1) / 2.0 + shift[0] * w, (h - 1) / 2.0 + shift[1] * h])
    translation = dst_centre - linear @ np.asarray(src_centre, dtype=np.float64)
    return np.concatenate([linear, translation[:, None]], axis=1)


def top_down_affine(
    box_xywh,
    input_size: tuple[int, int] = (256, 192),
    *,
    margin: float = 1.25,
    scale: float = 1.0,
    rotation_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Affine that crops one person's box into the network input.

    The box is expanded by ``margin`` about its centre, then grown along one side to the input
    aspect ratio ``w / h``; that region fills the input exactly (box centre -> input centre
    ``((w - 1) / 2, (h - 1) / 2)``) before the augmentation is applied about the input centre.

    Args:
      box_xywh: ``(4,)`` person box ``(x, y, w, h)`` in original pixels.
      input_size: ``(h, w)`` of the network input.
      margin: context factor around the box (1.25 as in Xiao et al., "Simple Baselines for
        Human Pose Estimation and Tracking", ECCV 2018).
      scale: magnification; ``> 1`` zooms in.
      rotation_deg: counter-clockwise rotation of the content as seen.
      shift: content translation as a fraction of the input ``(w, h)``.

    Returns:
      ``(2, 3)`` float64 matrix, original pixels -> input pixels.
    """
    x, y, bw, bh = (float(v) for v in np.asarray(box_xywh, dtype=np.float64))
    h, w = input_size
    centre = (x + bw / 2.0, y + bh / 2.0)
    # A degenerate (zero-size) box still gets a 1-pixel crop rather than a division by zero.
    crop_w, crop_h = max(bw * margin, 1.0), max(bh * margin, 1.0)
    aspect = w / h
    if crop_w > crop_h * aspect:
        crop_h = crop_w / aspect
    else:
        crop_w = crop_h * aspect
    return _similarity(centre, input_size, scale * w / crop_w, rotation_deg, shift)


def bottom_up_affine(
    image_hw: tuple[int, int],
    input_size: tuple[int, int],
    *,
    scale: float = 1.0,
    rotation_deg: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Affine that fits the whole image into the input, keeping its aspect ratio (letterbox).

    The image's longer side (relative to the input) fills the input; the image is centred and
    the rest is zero padding. Augmentation is applied about the input centre.

    Args:
      image_hw: ``(H, W)`` of the original image.
      input_size: ``(h, w)`` of the network input.
      scale, rotation_deg, shift: as in :func:`top_down_affine`.

    Returns:
      ``(2, 3)`` float64 matrix, original pixels -> input pixels.
    """
    big_h, big_w = image_hw
    h, w = input_size
    fit = min(w / big_w, h / big_h)
    centre = ((big_w - 1) / 2.0, (big_h - 1) / 2.0)
    return _similarity(centre, input_size, scale * fit, rotation_deg, shift)


def flip_affine(matrix: np.ndarray, input_width: int) -> np.ndarray:
    """Composes a horizontal mirror of the input, ``x -> (w - 1) - x``, after ``matrix``.

    ``(w - 1) - x`` swaps pixel centres ``c`` and ``w - 1 - c`` and maps the input's span
    ``[-0.5, w - 0.5]`` onto itself.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    mirror = np.array([[-1.0, 0.0, input_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return (mirror @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]


def affine_scale(matrix: np.ndarray) -> float:
    """Isotropic scale factor of an affine (input pixels per original pixel)."""
    (a, b, _), (c, d, _) = np.asarray(matrix, dtype=np.float64).tolist()
    return math.sqrt(abs(a * d - b * c))


def transform_keypoints(
    keypoints: np.ndarray, matrix: np.ndarray, input_size: tuple[int, int]
) -> np.ndarray:
    """Maps ``(..., K, 3)`` keypoints; points leaving ``[-0.5, w - 0.5] x [-0.5, h - 0.5]`` or
    unlabelled (``v == 0``) become ``(0, 0, 0)``. No left/right swap (see :func:`warp_example`)."""
    keypoints = np.asarray(keypoints, dtype=np.float32)
    h, w = input_size
    xy = geometry.apply_affine(keypoints[..., :2], matrix)
    v = keypoints[..., 2]
    inside = (
        (xy[..., 0] >= -0.5)
        & (xy[..., 0] <= w - 0.5)
        & (xy[..., 1] >= -0.5)
        & (xy[..., 1] <= h - 0.5)
    )
    keep = (v > 0) & inside
    out = np.concatenate([xy, v[..., None]], axis=-1).astype(np.float32)
    out[~keep] = 0.0
    return out


def transform_boxes(boxes_xywh: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Axis-aligned hull ``(..., 4)`` xywh of the four transformed corners of each box.

    In closed form (this runs for every crop the top-down pipeline makes): under
    ``x' = a x + b y + c`` the corners of ``[x, x + w] x [y, y + h]`` span
    ``a x + b y + c + [min(0, a w) + min(0, b h), max(0, a w) + max(0, b h)]``, likewise in y.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    x, y, bw, bh = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    out = np.empty(boxes.shape, dtype=np.float64)
    for row in range(2):  # x' then y'
        a, b, c = m[row]
        dx, dy = a * bw, b * bh
        out[..., row] = a * x + b * y + c + np.minimum(dx, 0.0) + np.minimum(dy, 0.0)
        out[..., row + 2] = np.abs(dx) + np.abs(dy)
    return out.astype(np.float32)


def box_region_mask(
    boxes_xywh: np.ndarray, matrix: np.ndarray, input_size: tuple[int, int]
) -> np.ndarray:
    """``(h, w)`` bool: input pixels whose centre maps back inside any of the ``(N, 4)`` boxes.

    The region is the exact (rotated) image of each box, not its axis-aligned hull.
    """
    h, w = input_size
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    mask = np.zeros((h, w), dtype=bool)
    if len(boxes) == 0:
        return mask
    inverse = geometry.invert_affine(matrix)
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    src_x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
    src_y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
    for x, y, bw, bh in boxes:
        mask |= (src_x >= x) & (src_x <= x + bw) & (src_y >= y) & (src_y <= y + bh)
    return mask


def _warp_dense(
    array: np.ndarray, matrix: np.ndarray, input_size: tuple[int, int], interpolation: int
) -> np.ndarray:
    h, w = input_size
    squeeze = array.ndim == 3 and array.shape[-1] == 1
    src = np.ascontiguousarray(array[..., 0] if squeeze else array)
    out = cv2.warpAffine(
        src,
        np.asarray(matrix, dtype=np.float64),
        (w, h),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if out.ndim == 2 and array.ndim == 3:
        out = out[..., None]
    return out


def warp_example(
    example: Mapping[str, Any],
    matrix: np.ndarray,
    input_size: tuple[int, int],
    *,
    flip: bool = False,
) -> dict[str, np.ndarray]:
    """Applies one affine (and optionally a horizontal flip) to every part of an example.

    ``matrix`` is the un-mirrored map (from :func:`top_down_affine` / :func:`bottom_up_affine`);
    with ``flip=True`` this function composes :func:`flip_affine` itself and swaps left/right
    keypoints (``skeleton.COCO_FLIP_PERMUTATION``) and part labels
    (``skeleton.BODY_PART_FLIP_PERMUTATION``), so geometry and labels cannot get out of step.

    Args:
      example: stored example (``posejax.data.schema``): ``image (H, W, 3)``,
        ``keypoints (P, K, 3)``, ``boxes (P, 4)``, ``area (P,)``, ``ignore (P,)``, ``image_id``
        and optionally dense masks ``(H, W, 1)`` and ``head_boxes (P, 4)``.
      matrix: ``(2, 3)`` affine, original pixels -> input pixels.
      input_size: ``(h, w)``.
      flip: mirror the result horizontally.

    Returns:
      Dict with the same keys in input pixels: ``image (h, w, 3)`` uint8 (bilinear, zero
      border), ``keypoints (P, K, 3)`` float32 (``v`` kept; ``(0, 0, 0)`` where the point leaves
      the input), ``boxes (P, 4)`` float32 (axis-aligned hull of the transformed corners, not
      clipped to the input), ``area (P,)`` scaled by ``|det|``, ``ignore``, ``image_id``, dense
      masks ``(h, w, 1)`` (nearest neighbour), ``head_boxes`` if present, and ``transform``: the
      ``(2, 3)`` float64 matrix actually applied (mirror included). ``native_keypoints`` is not
      carried over (its left/right pairs are dataset-specific).
    """
    h, w = input_size
    matrix = np.asarray(matrix, dtype=np.float64)
    if flip:
        matrix = flip_affine(matrix, w)

    out: dict[str, np.ndarray] = {
        "transform": matrix,
        schema.IMAGE: _warp_dense(
            np.asarray(example[schema.IMAGE], dtype=np.uint8), matrix, input_size, cv2.INTER_LINEAR
        ),
        schema.IMAGE_ID: np.asarray(example[schema.IMAGE_ID], dtype=np.int64),
        schema.IGNORE: np.asarray(example[schema.IGNORE], dtype=bool),
        schema.AREA: np.asarray(example[schema.AREA], dtype=np.float32)
        * np.float32(affine_scale(matrix) ** 2),
    }

    keypoints = np.asarray(example[schema.KEYPOINTS], dtype=np.float32)
    keypoints = transform_keypoints(keypoints, matrix, input_size)
    if flip:
        keypoints = keypoints[..., skeleton.COCO_FLIP_PERMUTATION, :]
    out[schema.KEYPOINTS] = keypoints
    out[schema.BOXES] = transform_boxes(
        np.asarray(example[schema.BOXES], dtype=np.float32).reshape(-1, 4), matrix
    )
    if schema.HEAD_BOXES in example:
        out[schema.HEAD_BOXES] = transform_boxes(
            np.asarray(example[schema.HEAD_BOXES], dtype=np.float32).reshape(-1, 4), matrix
        )

    for key in schema.DENSE_LABEL_KEYS:
        if key not in example:
            continue
        labels = _warp_dense(np.asarray(example[key]), matrix, input_size, cv2.INTER_NEAREST)
        permutation = _DENSE_FLIP_PERMUTATIONS.get(key)
        if flip and permutation is not None:
            lookup = np.arange(max(int(labels.max(initial=0)) + 1, len(permutation)))
            lookup[: len(permutation)] = permutation
            labels = lookup[labels].astype(labels.dtype)
        out[key] = labels
    return out
