"""Body-part segmentation with joint discs, top-down.

Every output-map cell is classified into one of ``NUM_CLASSES = 28`` classes:

==========================  =======  =====================================================
classes                     indices  meaning
==========================  =======  =====================================================
``BACKGROUND_CLASS``        0        not person 0's body (see "other people" below)
body parts                  1 - 10   ``skeleton.BODY_PARTS[1:]``: head, torso, 8 limb parts
joint discs                 11 - 27  ``JOINT_CLASS_OFFSET + k``: disc around keypoint ``k``
==========================  =======  =====================================================

The joint discs are what makes this a pose estimator: keypoint ``k`` is read off the predicted
probability of class ``JOINT_CLASS_OFFSET + k``.

Targets (``target_source="keypoints"``, synthesised in ``jnp`` inside the jitted step, in map
coordinates). Sizes are proportional to the person's *scale*: the torso length, mean of the
labelled left and right shoulder-hip distances; when neither pair is labelled, ``0.3 x`` the
larger side of the person's box (a standing adult's torso is about 0.3 of its height).
Painter's order, later on top:

1. torso: the shoulders-hips quadrilateral ``skeleton.TORSO_KEYPOINTS`` (even-odd
   point-in-polygon test), dilated by the limb radius so that a side view (a degenerate, flat
   quad) still has a torso; drawn only when all four corners are labelled;
2. head: a disc around the mean of the labelled face keypoints, radius
   ``max(head_radius x scale, farthest face keypoint from that centre)``;
3. legs then arms (arms are most often in front of the body): capsules of radius
   ``limb_radius x scale`` (at least ``MIN_RADIUS`` map px, so thin limbs stay connected at the
   map resolution) around the segments ``skeleton.BODY_PART_SEGMENTS`` with both ends
   labelled;
4. joint discs of radius ``joint_radius`` map px around person 0's labelled keypoints, in
   keypoint order (a later keypoint's disc covers an earlier one's where they overlap).

Other people: only person 0 is a target in a top-down crop. By default other people in the
crop are background, like everything else that is not person 0 (the network must learn to
segment the centred person only, consistent with the keypoint targets). With
``label_other_people=True`` the body parts of the other valid slots are painted underneath
person 0 (a later slot is taken as nearer, person 0 on top) but never their joint discs: the
decoder expects one disc per joint class. With ``target_source="rendered"`` the body-part layer
comes from the dataset's ``part_mask`` (block mode at the output stride), which covers all
people in the crop; person 0's joint discs are still drawn on top from the keypoints.

Loss: softmax cross-entropy per cell, masked by ``loss_mask`` (min-pooled to the map like the
other formulations: a cell touching an ignored person's box is ignored) and by person 0's
``valid``; optional class weights.

Decoder: for each joint class, the probability-weighted centroid of the cells that lie in a
window of radius ``ceil(2 x joint_radius)`` around the class's argmax (a disc fits in it) and
whose probability is at least ``centroid_threshold`` of that maximum; the window stops a second
blob elsewhere from pulling the centroid away, the threshold drops the low tail. Sub-cell
accuracy comes from the centroid; the confidence is the maximum probability.

mIoU: the joint discs are an auxiliary layer painted over the body parts, so the dense metric
is computed on the 11 body-part classes only: predictions are the argmax over the 11 part
logits (joint classes left out), targets the part layer *before* the discs were drawn.

Shape legend: ``B`` batch, ``M`` people slots, ``K`` keypoints, ``h, w`` input size, ``H, W``
output-map size, ``C`` classes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from posejax import geometry, skeleton
from posejax.formulations.base import (
    TOP_DOWN,
    Batch,
    DisplayMap,
    Formulation,
    Outputs,
    PosePrediction,
    Targets,
)
from posejax.formulations.common import ConvHead, KeyedHead, downsample_mask

BACKGROUND_CLASS = 0
NUM_PART_CLASSES = skeleton.NUM_BODY_PARTS  # background + 10 parts = 11
HEAD_CLASS = skeleton.BODY_PARTS.index("head")
TORSO_CLASS = skeleton.BODY_PARTS.index("torso")
JOINT_CLASS_OFFSET = NUM_PART_CLASSES  # class of keypoint k's disc: JOINT_CLASS_OFFSET + k
NUM_CLASSES = NUM_PART_CLASSES + skeleton.NUM_KEYPOINTS  # 28

# Limb painting order: legs, then arms (arms are drawn on top).
LIMB_PAINT_ORDER: tuple[int, ...] = (7, 8, 9, 10, 3, 4, 5, 6)
MIN_RADIUS = 0.75  # map px; > sqrt(2) / 2 keeps a capsule's cells connected
TORSO_FALLBACK_BOX_FRACTION = 0.3

TARGET_SOURCES = ("keypoints", "rendered")
CLASS_WEIGHTINGS = ("none", "inverse_sqrt_frequency")

# Outputs and targets keys.
LOGITS = "logits"  # outputs: (B, H, W, C) float32
LABELS = "labels"  # targets: (B, H, W) int32, all 28 classes
PART_LABELS = "part_labels"  # targets: (B, H, W) int32, body-part layer under the discs
MASK = "mask"  # targets: (B, H, W) float32 loss mask at map size
WEIGHTS = "weights"  # targets: (B, H, W) float32 mask x class weight


def _segment_distance(points: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Distance from ``points`` ``(..., 2)`` to the segment ``a``-``b`` (each ``(2,)``)."""
    ab = b - a
    t = jnp.sum((points - a) * ab, axis=-1) / jnp.maximum(jnp.sum(ab * ab), 1e-12)
    closest = a + jnp.clip(t, 0.0, 1.0)[..., None] * ab
    return jnp.linalg.norm(points - closest, axis=-1)


def _inside_polygon(points: jax.Array, polygon: jax.Array) -> jax.Array:
    """Even-odd (crossing number) test: ``points`` ``(..., 2)``, ``polygon`` ``(V, 2)``."""
    px, py = points[..., 0], points[..., 1]
    inside = jnp.zeros(px.shape, bool)
    num_vertices = polygon.shape[0]
    for i in range(num_vertices):
        (xi, yi), (xj, yj) = polygon[i], polygon[(i + 1) % num_vertices]
        straddles = (yi > py) != (yj > py)
        dy = jnp.where(yj == yi, 1.0, yj - yi)  # unused when not straddling
        crosses = px < (xj - xi) * (py - yi) / dy + xi
        inside = inside ^ (straddles & crosses)
    return inside


def person_scale(keypoints: jax.Array, box_size: jax.Array) -> jax.Array:
    """Torso length of one person (see the module docstring), in the keypoints' units.

    Args:
      keypoints: ``(K, 3)``.
      box_size: ``(2,)`` box ``(w, h)`` in the same units (the fallback).
    """
    lengths, counts = 0.0, 0.0
    for shoulder, hip in ((5, 11), (6, 12)):
        labelled = (keypoints[shoulder, 2] > 0) & (keypoints[hip, 2] > 0)
        length = jnp.linalg.norm(keypoints[shoulder, :2] - keypoints[hip, :2])
        lengths = lengths + jnp.where(labelled, length, 0.0)
        counts = counts + labelled
    fallback = TORSO_FALLBACK_BOX_FRACTION * jnp.max(box_size)
    return jnp.where(counts > 0, lengths / jnp.maximum(counts, 1.0), fallback)


def paint_body_parts(
    keypoints: jax.Array,
    scale: jax.Array,
    grid: jax.Array,
    *,
    limb_radius: float,
    head_radius: float,
) -> jax.Array:
    """Body-part class per cell for one person (0 where the person is absent).

    Args:
      keypoints: ``(K, 3)`` in map coordinates.
      scale: person scale in map px (:func:`person_scale`).
      grid: ``(H, W, 2)`` cell-centre ``(x, y)`` map coordinates.
      limb_radius, head_radius: fractions of ``scale``.

    Returns:
      ``(H, W)`` int32.
    """
    xy, labelled = keypoints[:, :2], keypoints[:, 2] > 0
    labels = jnp.zeros(grid.shape[:2], jnp.int32)
    limb_px = jnp.maximum(limb_radius * scale, MIN_RADIUS)

    torso = jnp.asarray(skeleton.TORSO_KEYPOINTS)
    polygon = xy[torso]
    edges = jnp.stack([_segment_distance(grid, polygon[i], polygon[(i + 1) % 4]) for i in range(4)])
    in_torso = _inside_polygon(grid, polygon) | (jnp.min(edges, axis=0) <= limb_px)
    labels = jnp.where(in_torso & jnp.all(labelled[torso]), TORSO_CLASS, labels)

    face = jnp.asarray(skeleton.HEAD_KEYPOINTS)
    face_weights = labelled[face].astype(jnp.float32)
    num_face = jnp.sum(face_weights)
    centre = jnp.sum(xy[face] * face_weights[:, None], axis=0) / jnp.maximum(num_face, 1.0)
    spread = jnp.max(jnp.linalg.norm(xy[face] - centre, axis=-1) * face_weights)
    radius = jnp.maximum(jnp.maximum(head_radius * scale, spread), MIN_RADIUS)
    in_head = jnp.linalg.norm(grid - centre, axis=-1) <= radius
    labels = jnp.where(in_head & (num_face > 0), HEAD_CLASS, labels)

    for part in LIMB_PAINT_ORDER:
        a, b = skeleton.BODY_PART_SEGMENTS[part]
        in_limb = _segment_distance(grid, xy[a], xy[b]) <= limb_px
        labels = jnp.where(in_limb & labelled[a] & labelled[b], part, labels)
    return labels


def paint_joint_discs(
    labels: jax.Array, keypoints: jax.Array, grid: jax.Array, *, radius: float
) -> jax.Array:
    """Draw ``JOINT_CLASS_OFFSET + k`` discs for one person's labelled keypoints onto ``labels``.

    Args:
      labels: ``(H, W)`` int32.
      keypoints: ``(K, 3)`` in map coordinates.
      grid: ``(H, W, 2)`` cell centres.
    """
    distances = jnp.linalg.norm(grid[None] - keypoints[:, None, None, :2], axis=-1)  # (K, H, W)
    inside = (distances <= radius) & (keypoints[:, 2, None, None] > 0)
    for k in range(keypoints.shape[0]):
        labels = jnp.where(inside[k], JOINT_CLASS_OFFSET + k, labels)
    return labels


def block_mode(labels: jax.Array, stride: int, map_size: tuple[int, int], num_classes: int):
    """Most frequent class of each ``stride x stride`` block (ties -> lower class).

    Args:
      labels: ``(B, h, w)`` int.

    Returns:
      ``(B, H, W)`` int32.
    """
    height, width = map_size
    blocks = labels[:, : height * stride, : width * stride].reshape(
        labels.shape[0], height, stride, width, stride
    )
    counts = jnp.sum(jax.nn.one_hot(blocks, num_classes, dtype=jnp.float32), axis=(2, 4))
    return jnp.argmax(counts, axis=-1).astype(jnp.int32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PartSegmentation(Formulation):
    """Per-cell classification into background, 10 body parts and 17 joint discs.

    Attributes:
      target_source: ``"keypoints"`` (synthesise parts from keypoints) or ``"rendered"`` (take
        them from the batch's ``part_mask``; joint discs still from keypoints).
      limb_radius: limb capsule radius as a fraction of the torso length (torso dilation too).
      head_radius: head disc radius as a fraction of the torso length.
      joint_radius: joint disc radius in output-map px.
      label_other_people: paint the other valid people's body parts under person 0
        (``"keypoints"`` source only; a rendered ``part_mask`` already covers everyone).
      class_weighting: ``"none"``, ``"inverse_sqrt_frequency"`` (per batch, normalised to a
        mean weight of 1 over unmasked cells) or an explicit sequence of ``NUM_CLASSES`` weights.
      centroid_threshold: decoder keeps cells with probability >= this fraction of the peak.
      head_channels: width of the head's 3x3 convolutions.
      head_convs: number of 3x3 conv + ReLU layers before the 1x1 classifier.
    """

    target_source: str = "keypoints"
    limb_radius: float = 0.15
    head_radius: float = 0.25
    joint_radius: float = 1.0
    label_other_people: bool = False
    class_weighting: str | Sequence[float] = "none"
    centroid_threshold: float = 0.5
    head_channels: int = 128
    head_convs: int = 1

    input_mode = TOP_DOWN

    def __post_init__(self):
        if self.target_source not in TARGET_SOURCES:
            raise ValueError(
                f"target_source must be one of {TARGET_SOURCES}, got {self.target_source!r}"
            )
        if self.num_keypoints != skeleton.NUM_KEYPOINTS:
            raise ValueError("part segmentation is defined on the COCO-17 skeleton")
        if isinstance(self.class_weighting, str):
            if self.class_weighting not in CLASS_WEIGHTINGS:
                raise ValueError(
                    f"class_weighting must be one of {CLASS_WEIGHTINGS} or a sequence of "
                    f"{NUM_CLASSES} weights, got {self.class_weighting!r}"
                )
        else:
            weights = tuple(float(x) for x in self.class_weighting)
            if len(weights) != NUM_CLASSES:
                raise ValueError(f"class_weighting needs {NUM_CLASSES} weights, got {len(weights)}")
            object.__setattr__(self, "class_weighting", weights)  # hashable for jit

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def num_dense_classes(self) -> int:
        """mIoU is over the 11 body-part classes (the joint discs are left out)."""
        return NUM_PART_CLASSES

    @property
    def batch_keys(self) -> tuple[str, ...]:
        source = "part_mask" if self.target_source == "rendered" else "boxes"
        return ("keypoints", "valid", "loss_mask", source)

    @property
    def display_specs(self) -> dict[str, DisplayMap]:
        return {
            "classes": DisplayMap.labels(NUM_CLASSES),
            "joint_probability": DisplayMap.intensity(),
        }

    def make_head(self, in_channels: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return KeyedHead(
            LOGITS,
            ConvHead(
                in_channels, self.head_channels, NUM_CLASSES, depth=self.head_convs, rngs=rngs
            ),
        )

    def _grid(self) -> jax.Array:
        height, width = self.map_size
        ys, xs = jnp.meshgrid(
            jnp.arange(height, dtype=jnp.float32),
            jnp.arange(width, dtype=jnp.float32),
            indexing="ij",
        )
        return jnp.stack([xs, ys], axis=-1)  # (H, W, 2)

    def encode(self, batch: Batch) -> Targets:
        """Class map, body-part layer, loss mask and weights at the output stride.

        Returns:
          ``labels`` ``(B, H, W)`` int32, ``part_labels`` ``(B, H, W)`` int32, ``mask`` and
          ``weights`` ``(B, H, W)`` float32.

        Raises:
          ValueError: ``target_source="rendered"`` and the batch has no ``part_mask``.
        """
        if self.target_source == "rendered" and "part_mask" not in batch:
            raise ValueError(
                'PartSegmentation(target_source="rendered") needs the batch key "part_mask", '
                f"but this dataset has none (batch keys: {sorted(batch)}); "
                'use target_source="keypoints".'
            )
        grid = self._grid()
        keypoints = jnp.asarray(batch["keypoints"], jnp.float32)  # (B, M, K, 3)
        xy = geometry.image_to_map(keypoints[..., :2], self.stride)
        keypoints = jnp.concatenate([xy, keypoints[..., 2:]], axis=-1)
        valid = jnp.asarray(batch["valid"]).astype(bool)  # (B, M)

        if self.target_source == "rendered":
            part_mask = jnp.asarray(batch["part_mask"]).astype(jnp.int32)
            parts = block_mode(part_mask, self.stride, self.map_size, NUM_PART_CLASSES)
        else:
            box_size = jnp.asarray(batch["boxes"], jnp.float32)[..., 2:] / self.stride
            scale = jax.vmap(jax.vmap(person_scale))(keypoints, box_size)  # (B, M)
            paint = jax.vmap(
                jax.vmap(
                    lambda kp, s: paint_body_parts(
                        kp,
                        s,
                        grid,
                        limb_radius=self.limb_radius,
                        head_radius=self.head_radius,
                    )
                )
            )
            slots = range(keypoints.shape[1]) if self.label_other_people else range(1)
            # Later slots are nearer; person 0 is painted last, on top.
            order = [m for m in slots if m != 0] + [0]
            person_parts = paint(keypoints[:, order], scale[:, order])  # (B, len(order), H, W)
            parts = jnp.zeros(person_parts.shape[:1] + person_parts.shape[2:], jnp.int32)
            for i, m in enumerate(order):
                drawn = (person_parts[:, i] > 0) & valid[:, m, None, None]
                parts = jnp.where(drawn, person_parts[:, i], parts)

        # Joint discs of person 0 only (an invalid person 0 gets none).
        person0 = keypoints[:, 0].at[..., 2].multiply(valid[:, 0, None].astype(jnp.float32))
        draw_discs = lambda lab, kp: paint_joint_discs(lab, kp, grid, radius=self.joint_radius)
        labels = jax.vmap(draw_discs)(parts, person0)

        mask = downsample_mask(jnp.asarray(batch["loss_mask"], jnp.float32), self.stride)
        mask = mask * valid[:, 0, None, None].astype(jnp.float32)
        weights = mask * self._class_weights(labels, mask)[labels]
        return {LABELS: labels, PART_LABELS: parts, MASK: mask, WEIGHTS: weights}

    def _class_weights(self, labels: jax.Array, mask: jax.Array) -> jax.Array:
        """``(C,)`` weight per class (see ``class_weighting``)."""
        if not isinstance(self.class_weighting, str):
            return jnp.asarray(self.class_weighting, jnp.float32)
        if self.class_weighting == "none":
            return jnp.ones((NUM_CLASSES,), jnp.float32)
        counts = jnp.sum(jax.nn.one_hot(labels, NUM_CLASSES) * mask[..., None], axis=(0, 1, 2))
        total = jnp.sum(counts)
        frequency = counts / jnp.maximum(total, 1e-6)
        weights = jnp.where(counts > 0, jax.lax.rsqrt(jnp.maximum(frequency, 1e-12)), 0.0)
        # Normalise so the weighted cell count equals the unweighted one (same loss scale).
        return weights * total / jnp.maximum(jnp.sum(weights * counts), 1e-6)

    def loss(self, outputs: Outputs, targets: Targets) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Masked (optionally class-weighted) softmax cross-entropy, mean over unmasked cells.

        Terms: ``cross_entropy`` (the loss) and the unweighted mean cross-entropy over the
        background, body-part and joint-disc cells (``ce_background``, ``ce_parts``,
        ``ce_joints``) to see which layer is being learned.
        """
        labels, mask = targets[LABELS], targets[MASK]
        ce = optax.softmax_cross_entropy_with_integer_labels(
            outputs[LOGITS].astype(jnp.float32), labels
        )
        loss = jnp.sum(targets[WEIGHTS] * ce) / jnp.maximum(jnp.sum(mask), 1.0)
        terms = {"cross_entropy": loss}
        groups = {
            "ce_background": labels == BACKGROUND_CLASS,
            "ce_parts": (labels > BACKGROUND_CLASS) & (labels < JOINT_CLASS_OFFSET),
            "ce_joints": labels >= JOINT_CLASS_OFFSET,
        }
        for name, member in groups.items():
            cells = mask * member
            terms[name] = jnp.sum(cells * ce) / jnp.maximum(jnp.sum(cells), 1.0)
        return loss, terms

    def decode(self, outputs: Outputs, *, stage: int = -1) -> list[PosePrediction]:
        """Thresholded, windowed probability centroid of each joint class (module docstring)."""
        self.stage_index(stage)  # one stage: -1 or 0
        probs = _softmax(np.asarray(outputs[LOGITS], np.float32))
        joint = probs[..., JOINT_CLASS_OFFSET : JOINT_CLASS_OFFSET + self.num_keypoints]
        joint = np.moveaxis(joint, -1, 1)  # (B, K, H, W)
        batch, num_keypoints, height, width = joint.shape
        flat = joint.reshape(batch, num_keypoints, -1)
        peak_index = flat.argmax(axis=-1)
        peak = flat.max(axis=-1)  # (B, K)
        peak_row, peak_col = np.divmod(peak_index, width)
        rows = np.arange(height)[None, None, :, None]
        cols = np.arange(width)[None, None, None, :]
        window = math.ceil(2 * self.joint_radius)
        keep = (
            (np.abs(rows - peak_row[..., None, None]) <= window)
            & (np.abs(cols - peak_col[..., None, None]) <= window)
            & (joint >= self.centroid_threshold * peak[..., None, None])
        )
        mass = joint * keep
        total = np.maximum(mass.sum(axis=(2, 3)), 1e-12)
        x = (mass * cols).sum(axis=(2, 3)) / total
        y = (mass * rows).sum(axis=(2, 3)) / total
        xy = geometry.map_to_image(np.stack([x, y], axis=-1), self.stride)
        poses = np.concatenate([xy, peak[..., None]], axis=-1).astype(np.float32)
        return [
            PosePrediction(poses=pose[None], scores=np.asarray([pose[:, 2].mean()], np.float32))
            for pose in poses
        ]

    def oracle_outputs(self, targets: Targets) -> Outputs:
        """Logits whose argmax is the target class map and whose argmax over the 11 body-part
        classes is the part layer under the joint discs (what mIoU is scored against)."""
        labels = jax.nn.one_hot(targets[LABELS], NUM_CLASSES)
        parts = jax.nn.one_hot(targets[PART_LABELS], NUM_CLASSES)
        return {LOGITS: 20.0 * labels + 10.0 * parts}

    def display_maps(self, outputs: Outputs, *, stage: int = -1) -> dict[str, np.ndarray]:
        """``classes``: argmax over all 28 classes; ``joint_probability``: max joint prob."""
        self.stage_index(stage)
        logits = np.asarray(outputs[LOGITS], np.float32)
        probs = _softmax(logits)
        return {
            "classes": logits.argmax(axis=-1).astype(np.int32),
            "joint_probability": probs[..., JOINT_CLASS_OFFSET:].max(axis=-1),
        }

    def dense_predictions(self, outputs: Outputs) -> np.ndarray:
        """``(B, H, W)`` argmax over the 11 body-part logits (joint classes left out)."""
        logits = np.asarray(outputs[LOGITS], np.float32)
        return logits[..., :NUM_PART_CLASSES].argmax(axis=-1).astype(np.int32)

    def dense_targets(self, targets: Targets) -> np.ndarray:
        """``(B, H, W)`` body-part layer under the joint discs."""
        return np.asarray(targets[PART_LABELS], np.int32)
