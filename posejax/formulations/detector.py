"""Person detection as centre points (Zhou et al., "Objects as Points", arXiv 1904.07850, 2019).

The top-down formulations need person boxes; this formulation finds them on the same shared
backbone, trained by the same trainer on the same whole images as the bottom-up formulation.

* **encoder** (map pixels): one *centre map* with a Gaussian at the map cell holding each
  person's box centre (peak exactly 1 there), standard deviation proportional to the box size
  (``sigma = max(min_sigma, sigma_fraction * sqrt(w h))``: the paper's "object size-adaptive
  standard deviation"), the maximum over people; at that cell, the box *size* ``(w, h)`` and the
  sub-pixel *offset* of the true centre from the cell. People of the batch's ``valid`` slots with
  a box of positive size are targets; ignored people are masked out by ``loss_mask``.
* **head**: three branches on the backbone features (3x3 conv + ReLU, 1x1 conv each): centre
  logit (1 channel, bias initialised to ``log(0.1 / 0.9)`` as in the paper, so training starts at
  a 0.1 prior), size (2), offset (2).
* **loss** (the paper's Eq. 1-3): penalty-reduced pixelwise focal loss on the centre map
  (``alpha = 2``, ``beta = 4``), normalised by the number of people, plus ``size_weight`` x L1 on
  the sizes (0.1 in the paper) and ``offset_weight`` x L1 on the offsets (1), both read at the
  centre cells only.
* **decoder**: sigmoid, 3x3 local-maximum suppression, the ``max_detections`` highest peaks with
  a score of at least ``min_score``; box = cell + offset -/+ size / 2, in input pixels.

Outputs: ``{"centres": (B, H, W, 1), "sizes": (B, H, W, 2), "offsets": (B, H, W, 2)}`` float32
(centre *logits*). Decoded: :class:`PosePrediction` with ``boxes`` ``(P, 4)`` ``(x, y, w, h)``,
``scores`` the peak heights, and poses without keypoints (every keypoint score 0): the
formulation does not predict keypoints (``predicts_keypoints = False``), so the evaluator
reports COCO box AP for it and no OKS.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posejax.formulations.base import BOTTOM_UP, Batch, DisplayMap, Formulation, PosePrediction
from posejax.formulations.common import ConvHead, downsample_mask
from posejax.geometry import image_to_map, map_to_image

CENTRE_PRIOR = 0.1  # initial centre probability (the paper's bias -2.19)


class CentreHead(nnx.Module):
    """Centre logit, box size and offset branches on shared features."""

    def __init__(self, in_channels: int, hidden: int, *, rngs: nnx.Rngs):
        self.centres = ConvHead(in_channels, hidden, 1, rngs=rngs)
        self.sizes = ConvHead(in_channels, hidden, 2, rngs=rngs)
        self.offsets = ConvHead(in_channels, hidden, 2, rngs=rngs)
        bias = self.centres.out.bias
        bias.value = jnp.full_like(bias.value, math.log(CENTRE_PRIOR / (1.0 - CENTRE_PRIOR)))

    def __call__(self, features: jax.Array) -> dict[str, jax.Array]:
        return {
            "centres": self.centres(features),
            "sizes": self.sizes(features),
            "offsets": self.offsets(features),
        }


def local_maxima(scores: np.ndarray) -> np.ndarray:
    """``(H, W)`` -> bool mask of cells not smaller than any of their 8 neighbours."""
    padded = np.pad(scores, 1, constant_values=-np.inf)
    h, w = scores.shape
    neighbours = np.stack(
        [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0
    )
    return scores >= neighbours.max(axis=0)


def centre_probabilities(outputs) -> np.ndarray:
    """``(B, H, W)`` centre probabilities (sigmoid of the centre logits), float64, on the host."""
    return 1.0 / (1.0 + np.exp(-np.asarray(outputs["centres"], np.float64)[..., 0]))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CentreNetDetector(Formulation):
    """Centre-point person detector (bottom-up: whole images).

    Attributes:
      head_channels: hidden channels of each head branch.
      sigma_fraction, min_sigma: centre Gaussian std = ``max(min_sigma, sigma_fraction *
        sqrt(w h))`` in map pixels.
      size_weight, offset_weight: the L1 terms' weights (the paper's 0.1 and 1).
      max_detections: top-K peaks kept per image.
      min_score: peaks below this centre probability are not boxes (the evaluator's box AP
        wants a low value; a top-down system sets its own threshold on top, see
        :mod:`posejax.inference.detection`).
      person_threshold: score from which a box counts as a person found: the evaluator's
        ``people_found_ratio`` and the default threshold of a top-down system fed by this
        detector (:mod:`posejax.inference.detection`).
    """

    head_channels: int = 64
    sigma_fraction: float = 0.1
    min_sigma: float = 0.8
    size_weight: float = 0.1
    offset_weight: float = 1.0
    max_detections: int = 20
    min_score: float = 0.05
    person_threshold: float = 0.2

    input_mode: ClassVar[str] = BOTTOM_UP
    predicts_keypoints: ClassVar[bool] = False
    predicts_boxes: ClassVar[bool] = True

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return ("boxes", "valid", "loss_mask")

    @property
    def display_specs(self) -> dict[str, DisplayMap]:
        return {"centres": DisplayMap.intensity()}

    @property
    def people_threshold(self) -> float:
        return self.person_threshold

    def make_head(self, in_channels: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return CentreHead(in_channels, self.head_channels, rngs=rngs)

    def encode(self, batch: Batch) -> dict[str, jax.Array]:
        boxes = jnp.asarray(batch["boxes"], jnp.float32)  # (B, M, 4) xywh, input pixels
        height, width = self.map_size
        size = boxes[..., 2:] / self.stride  # (B, M, 2) map pixels
        centre = image_to_map(boxes[..., :2] + 0.5 * boxes[..., 2:], self.stride)
        cell = jnp.clip(jnp.round(centre), 0.0, jnp.array([width - 1, height - 1], jnp.float32))
        present = jnp.asarray(batch["valid"], bool) & (size > 0).all(axis=-1)  # (B, M)
        sigma = jnp.maximum(self.min_sigma, self.sigma_fraction * jnp.sqrt(size.prod(axis=-1)))
        ys = jnp.arange(height, dtype=jnp.float32)[:, None]
        xs = jnp.arange(width, dtype=jnp.float32)[None, :]
        dist2 = (xs - cell[..., 0, None, None]) ** 2 + (ys - cell[..., 1, None, None]) ** 2
        gauss = jnp.exp(-dist2 / (2.0 * sigma[..., None, None] ** 2))  # (B, M, H, W)
        gauss = jnp.where(present[..., None, None], gauss, 0.0)
        at_cell = (dist2 == 0) & present[..., None, None]  # (B, M, H, W) one cell per person
        count = at_cell.sum(axis=1)  # people sharing a centre cell are averaged
        denom = jnp.maximum(count, 1)[..., None]
        sizes = jnp.einsum("bmhw,bmc->bhwc", at_cell.astype(jnp.float32), size) / denom
        offsets = jnp.einsum("bmhw,bmc->bhwc", at_cell.astype(jnp.float32), centre - cell) / denom
        return {
            "centres": gauss.max(axis=1)[..., None],  # (B, H, W, 1)
            "sizes": sizes,
            "offsets": offsets,
            "centre_cells": (count > 0).astype(jnp.float32),  # (B, H, W)
            "mask": downsample_mask(jnp.asarray(batch["loss_mask"], jnp.float32), self.stride),
        }

    def loss(self, outputs, targets) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits = outputs["centres"][..., 0]
        target = targets["centres"][..., 0]
        positive = targets["centre_cells"]
        mask = targets["mask"]
        num_people = jnp.maximum(positive.sum(), 1.0)
        prob = jax.nn.sigmoid(logits)
        pos_term = -((1.0 - prob) ** 2) * jax.nn.log_sigmoid(logits) * positive
        neg_term = -(prob**2) * ((1.0 - target) ** 4) * jax.nn.log_sigmoid(-logits)
        neg_term = neg_term * (1.0 - positive)
        focal = jnp.sum((pos_term + neg_term) * mask) / num_people
        cells = (positive * mask)[..., None]
        size_l1 = jnp.sum(jnp.abs(outputs["sizes"] - targets["sizes"]) * cells) / num_people
        offset_l1 = jnp.sum(jnp.abs(outputs["offsets"] - targets["offsets"]) * cells) / num_people
        loss = focal + self.size_weight * size_l1 + self.offset_weight * offset_l1
        return loss, {"centre_focal": focal, "size_l1": size_l1, "offset_l1": offset_l1}

    def decode(self, outputs, *, stage: int = -1) -> list[PosePrediction]:
        self.stage_index(stage)
        probs = centre_probabilities(outputs)
        sizes = np.asarray(outputs["sizes"], np.float64)
        offsets = np.asarray(outputs["offsets"], np.float64)
        predictions = []
        for prob, size, offset in zip(probs, sizes, offsets, strict=True):
            peaks = local_maxima(prob) & (prob >= self.min_score)
            iy, ix = np.nonzero(peaks)
            order = np.argsort(-prob[iy, ix], kind="stable")[: self.max_detections]
            iy, ix = iy[order], ix[order]
            centre = map_to_image(np.stack([ix, iy], axis=-1) + offset[iy, ix], self.stride)
            wh = np.maximum(size[iy, ix], 0.0) * self.stride
            boxes = np.concatenate([centre - 0.5 * wh, wh], axis=-1).reshape(-1, 4)
            predictions.append(
                PosePrediction(
                    poses=np.zeros((len(iy), self.num_keypoints, 3), np.float32),
                    scores=prob[iy, ix].astype(np.float32),
                    boxes=boxes.astype(np.float32),
                )
            )
        return predictions

    def oracle_outputs(self, targets) -> dict[str, jax.Array]:
        """Centre logits of the target map (clipped away from 0 and 1), sizes and offsets."""
        centre = jnp.clip(targets["centres"], 1e-6, 1.0 - 1e-6)
        return {
            "centres": jnp.log(centre) - jnp.log1p(-centre),
            "sizes": targets["sizes"],
            "offsets": targets["offsets"],
        }

    def display_maps(self, outputs, *, stage: int = -1) -> dict[str, np.ndarray]:
        self.stage_index(stage)
        return {"centres": centre_probabilities(outputs).astype(np.float32)}
