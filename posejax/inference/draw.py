"""Pictures of predictions: skeletons on images, maps as colour overlays, grids."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from posejax import skeleton


def draw_poses(
    image: np.ndarray,
    poses: np.ndarray,
    *,
    min_score: float = 0.05,
    limbs: Sequence[tuple[int, int]] = skeleton.COCO_LIMBS,
    colours: Sequence[tuple[int, int, int]] = skeleton.COCO_LIMB_COLOURS,
    thickness: int = 1,
    point_colour: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Draw ``(P, K, 3)`` poses (x, y, score) on a copy of an RGB ``uint8`` image."""
    out = np.ascontiguousarray(image.copy())
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, len(skeleton.COCO_KEYPOINTS), 3)
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    scale = 1 << shift
    for pose in poses:
        ok = (pose[:, 2] > min_score) & np.isfinite(pose[:, :2]).all(axis=1)
        for (a, b), colour in zip(limbs, colours, strict=True):
            if ok[a] and ok[b]:
                pa = tuple(int(round(v * scale)) for v in pose[a, :2])
                pb = tuple(int(round(v * scale)) for v in pose[b, :2])
                cv2.line(out, pa, pb, colour, thickness, cv2.LINE_AA, shift)
        for k in np.flatnonzero(ok):
            centre = tuple(int(round(v * scale)) for v in pose[k, :2])
            colour = point_colour or (255, 255, 255)
            cv2.circle(out, centre, max(1, thickness) * scale, colour, -1, cv2.LINE_AA, shift)
    return out


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    colour: tuple[int, int, int] = (255, 210, 0),
    thickness: int = 1,
) -> np.ndarray:
    """Draw ``(P, 4)`` ``(x, y, w, h)`` boxes (with their scores, when given) on a copy."""
    out = np.ascontiguousarray(image.copy())
    for i, (x, y, w, h) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        p0, p1 = (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h)))
        cv2.rectangle(out, p0, p1, colour, thickness, cv2.LINE_AA)
        if scores is not None:
            cv2.putText(
                out,
                f"{scores[i]:.2f}",
                (p0[0] + 2, p0[1] + 10 * thickness),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35 * thickness,
                colour,
                thickness,
                cv2.LINE_AA,
            )
    return out


GT_COLOUR = (0, 220, 0)  # ground truth is drawn in one colour, predictions in the limb colours
MIN_SIDE = 256  # readable pictures: at least this many pixels on the short side


def enlarge(image: np.ndarray, min_side: int = MIN_SIDE) -> tuple[np.ndarray, int]:
    """``image`` enlarged by the smallest integer factor giving ``min_side`` (nearest neighbour,
    so pixels stay sharp); returns ``(picture, factor)``."""
    factor = max(1, -(-min_side // min(image.shape[:2])))
    h, w = image.shape[:2]
    return cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST), factor


def scale_poses(poses: np.ndarray, factor: int) -> np.ndarray:
    """``(P, K, 3)`` poses in image pixels -> pixels of the image enlarged by ``factor`` (pixel
    centres kept: pixel ``c`` covers enlarged pixels ``c f .. c f + f - 1``)."""
    out = np.array(poses, np.float64, copy=True).reshape(-1, len(skeleton.COCO_KEYPOINTS), 3)
    found = out[..., 2:] > 0
    out[..., :2] = np.where(found, (out[..., :2] + 0.5) * factor - 0.5, 0.0)
    return out


def draw_prediction(
    image: np.ndarray,
    gt_poses: np.ndarray | None,
    poses: np.ndarray,
    *,
    caption: str = "",
    boxes: np.ndarray | None = None,
    box_scores: np.ndarray | None = None,
    min_score: float = 0.1,
    value_map: np.ndarray | None = None,
) -> np.ndarray:
    """A picture that can be judged: ``image`` enlarged to :data:`MIN_SIDE`, the ground truth in
    green, the prediction in the limb colours (keypoints above ``min_score``), boxes in yellow,
    a caption bar on top; with ``value_map`` (RGB, any size) a second panel beside it with the
    map over the image and the prediction. Poses and boxes are in ``image`` pixels."""
    big, factor = enlarge(image)
    thickness = max(1, big.shape[0] // 192)
    panel = big
    if gt_poses is not None and len(gt_poses):
        green = [GT_COLOUR] * len(skeleton.COCO_LIMBS)
        panel = draw_poses(
            panel,
            scale_poses(gt_poses, factor),
            colours=green,
            point_colour=GT_COLOUR,
            thickness=thickness,
        )
    if boxes is not None and len(boxes):
        scaled = np.asarray(boxes, np.float64).reshape(-1, 4) * factor
        scaled[:, :2] += 0.5 * (factor - 1)  # the pixel-centre convention of scale_poses
        panel = draw_boxes(panel, scaled, box_scores, thickness=thickness)
    predicted = scale_poses(poses, factor)
    panels = [draw_poses(panel, predicted, min_score=min_score, thickness=thickness)]
    if value_map is not None:
        shown = overlay(big, value_map)
        panels.append(draw_poses(shown, predicted, min_score=min_score, thickness=thickness))
    picture = np.concatenate(panels, axis=1)
    bar = np.full((22, picture.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, picture], axis=0)


def colourise(
    value_map: np.ndarray,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    colormap: int = cv2.COLORMAP_INFERNO,
) -> np.ndarray:
    """``(H, W)`` float map -> ``(H, W, 3)`` RGB uint8."""
    value_map = np.asarray(value_map, dtype=np.float32)
    lo = float(np.nanmin(value_map)) if vmin is None else vmin
    hi = float(np.nanmax(value_map)) if vmax is None else vmax
    norm = np.clip((value_map - lo) / max(hi - lo, 1e-6), 0, 1)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), colormap)
    return bgr[..., ::-1].copy()


def overlay(image: np.ndarray, value_map: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """Blend a colourised map (any size; resized to the image) over an RGB image."""
    h, w = image.shape[:2]
    if value_map.ndim == 2:
        value_map = colourise(value_map)
    resized = cv2.resize(value_map.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return (image.astype(np.float32) * (1 - alpha) + resized * alpha).astype(np.uint8)


def render_map(value_map: np.ndarray, display) -> np.ndarray:
    """One display map -> ``(H, W, 3)`` RGB uint8, drawn as its ``DisplayMap`` says.

    Args:
      value_map: ``(H, W)`` (``intensity``, ``labels``) or ``(H, W, 3)`` (``rgb``).
      display: its :class:`posejax.formulations.base.DisplayMap` (the formulation's
        ``display_specs[name]``): an intensity goes through a colour ramp over its range, labels
        get one colour per class of ``num_classes`` (the same colours in every picture), an RGB
        map in ``[0, 1]`` is drawn as it is.
    """
    value_map = np.asarray(value_map)
    if display.kind == "labels":
        return label_colours(display.num_classes)[np.clip(value_map, 0, display.num_classes - 1)]
    if display.kind == "rgb":
        return (np.clip(value_map, 0.0, 1.0) * 255).round().astype(np.uint8)
    return colourise(value_map)


def label_colours(num_classes: int, seed: int = 3) -> np.ndarray:
    """Distinct RGB colours per class label, black for background (class 0)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(64, 256, (num_classes, 3)).astype(np.uint8)
    colours[0] = 0
    return colours


def grid(
    images: Sequence[np.ndarray],
    *,
    columns: int = 4,
    pad: int = 2,
    cell_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Tile RGB images (resized to one cell size) into one picture."""
    if not images:
        raise ValueError("grid: no images to tile")
    ch, cw = cell_size or images[0].shape[:2]
    cells = [cv2.resize(im, (cw, ch), interpolation=cv2.INTER_NEAREST) for im in images]
    rows = -(-len(cells) // columns)
    out = np.full((rows * (ch + pad) + pad, columns * (cw + pad) + pad, 3), 255, np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        out[y : y + ch, x : x + cw] = cell
    return out


def save_png(path, image: np.ndarray) -> None:
    """Write an RGB image as PNG (creating parent folders)."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1])):
        raise OSError(f"could not write PNG to {path}")
