"""Gaussian heatmap regression (Tompson et al., NeurIPS 2014).

One map per joint holds a fixed-variance Gaussian centred on the joint; the head regresses the
maps with a pixelwise squared error; the decoder takes each map's maximum and refines it to
sub-pixel precision.

* **encoder**: ``G_k(p) = exp(-|p - x_k|^2 / (2 sigma^2))`` on the output grid (map pixels), the
  maximum over people where several are labelled (top-down crops have one target, ``M = 1``).
  Joints with ``v = 0`` get no target and zero weight.
* **head**: 3x3 conv + ReLU, 1x1 conv to ``K`` maps, on the shared backbone features.
* **loss**: squared error summed over pixels, averaged over labelled joints, masked by the
  batch's ``loss_mask`` (ignore regions).
* **decoder**: argmax, then a log-parabola fit per axis (exact for Gaussian maps), mapped back to
  input pixels through :func:`posejax.geometry.map_to_image`. Confidence = the fitted peak
  height, clipped to ``[0, 1]`` (1 for a clean target, whatever its sub-pixel offset); person
  score = mean keypoint confidence.

Outputs: ``{"heatmaps": (B, H, W, K)}`` float32.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posejax.formulations.base import TOP_DOWN, Batch, DisplayMap, Formulation, PosePrediction
from posejax.formulations.common import ConvHead, KeyedHead, downsample_mask, gaussian_maps
from posejax.geometry import image_to_map, map_to_image
from posejax.subpixel import refine_peaks_log_parabola


def decode_heatmaps(heatmaps: np.ndarray, stride: int) -> np.ndarray:
    """``(B, H, W, K)`` maps -> ``(B, K, 3)`` ``(x, y, confidence)`` in input pixels."""
    b, h, w, k = heatmaps.shape
    flat = np.transpose(heatmaps, (0, 3, 1, 2)).reshape(b * k, h * w)
    idx = flat.argmax(axis=1)
    iy, ix = np.divmod(idx, w)
    dy, dx, peak = refine_peaks_log_parabola(flat.reshape(b * k, h, w), iy, ix)
    xy = map_to_image(np.stack([ix + dx, iy + dy], axis=-1), stride)
    conf = np.clip(peak, 0.0, 1.0)
    return np.concatenate([xy, conf[:, None]], axis=-1).reshape(b, k, 3).astype(np.float32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianHeatmap(Formulation):
    """Heatmap formulation; ``sigma`` is in output-map pixels."""

    sigma: float = 1.5
    head_channels: int = 64
    head_depth: int = 1

    input_mode: ClassVar[str] = TOP_DOWN

    def make_head(self, in_channels: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return KeyedHead(
            "heatmaps",
            ConvHead(
                in_channels,
                self.head_channels,
                self.num_keypoints,
                depth=self.head_depth,
                rngs=rngs,
            ),
        )

    def encode(self, batch: Batch) -> dict[str, jax.Array]:
        kps = batch["keypoints"]
        weight = (kps[..., 2] > 0) & batch["valid"][..., None]
        xy = image_to_map(kps[..., :2], self.stride)
        return {
            "heatmaps": gaussian_maps(xy, weight, self.map_size, self.sigma),
            "joint_weight": weight.any(axis=1).astype(jnp.float32),  # (B, K)
            "pixel_weight": downsample_mask(batch["loss_mask"], self.stride),  # (B, H, W)
        }

    def loss(self, outputs, targets) -> tuple[jax.Array, dict[str, jax.Array]]:
        weight = targets["joint_weight"][:, None, None, :] * targets["pixel_weight"][..., None]
        se = weight * (outputs["heatmaps"] - targets["heatmaps"]) ** 2
        loss = se.sum() / jnp.maximum(targets["joint_weight"].sum(), 1.0)
        return loss, {"heatmap_mse": loss}

    def decode(self, outputs, *, stage: int = -1) -> list[PosePrediction]:
        self.stage_index(stage)  # one stage: -1 or 0
        poses = decode_heatmaps(np.asarray(outputs["heatmaps"]), self.stride)
        return [PosePrediction(p[None], p[None, :, 2].mean(axis=1)) for p in poses]

    def oracle_outputs(self, targets) -> dict[str, jax.Array]:
        return {"heatmaps": targets["heatmaps"]}

    @property
    def display_specs(self) -> dict[str, DisplayMap]:
        return {"heatmap_max": DisplayMap.intensity()}

    def display_maps(self, outputs, *, stage: int = -1) -> dict[str, np.ndarray]:
        self.stage_index(stage)
        return {"heatmap_max": np.asarray(outputs["heatmaps"]).max(axis=-1)}
