"""Part Affinity Fields: bottom-up multi-person pose estimation (Cao et al., CVPR 2017).

The network predicts, for the whole image, a confidence map per part and a 2D vector field per
limb pointing along the limb; people are parsed from the two by matching part candidates
limb by limb with the fields' line integrals (:mod:`posejax.parsing`).

* **encoder** (map pixels, pixel-centre convention of :mod:`posejax.geometry`):
  confidence map ``S_k(p) = max_m exp(-|p - x_{m,k}|^2 / (2 sigma^2))`` (Eq. 6-7; the paper
  writes ``sigma^2`` for what is ``2 sigma^2`` here, the authors' code uses ``2 sigma^2`` too).
  PAF of limb ``(A, B)``: the unit vector ``v = (x_B - x_A) / |x_B - x_A|`` on the pixels ``p``
  with ``-e <= v . (p - x_A) <= |x_B - x_A| + e`` and ``|v_perp . (p - x_A)| <= limb_width``
  (Eq. 8), averaged over the people whose limb covers ``p`` (Eq. 9). Only people with
  ``valid`` and both endpoints labelled (``v > 0``) contribute. The paper has ``e = 0``; the
  default here is ``e = limb_width`` (``extend_limb_ends``), close to what the authors' code
  does (its band is the perpendicular-distance test inside the segment's bounding box grown by
  the width): with ``e = 0`` a limb shorter than about one map pixel (the face of a small person
  at stride 4) can cover no pixel centre at all and gets no field. The loss weight ``W(p)`` is
  the batch's ``loss_mask`` min-pooled to the map (a cell touching an ignored region is
  ignored), shared by all channels.
* **head** (:class:`PafHead`): ``stages`` stages of two conv branches; stage 1 sees the backbone
  features ``F``, stage ``t > 1`` sees ``concat(F, S^{t-1}, L^{t-1})`` (Fig. 3). Every stage's
  predictions are returned for intermediate supervision and per-stage evaluation.
* **loss**: per stage, masked squared error of the confidence maps and of the PAFs (Eq. 3-4),
  each averaged over unmasked pixels x channels (the paper sums; the mean keeps the loss scale
  independent of the map size and the number of limbs); the total sums all stages (Eq. 5).
* **decoder**: :func:`posejax.parsing.paf.group_people` on the last stage (or any stage), map
  coordinates to input pixels with :func:`posejax.geometry.map_to_image`.

Defaults are for stride 4 (64x64 maps at a 256x256 input): ``sigma = 1`` map pixel (4 input
pixels; the OpenPose reference uses 7 input pixels at stride 8) and ``limb_width = 1`` map pixel
(a 3-pixel band, as in the reference at stride 8). The parsing thresholds are the reference's,
except ``min_parts = 3`` (the reference keeps people with 4 parts or more).

Equation numbers are those of the CVPR 2017 paper (arXiv:1611.08050v2).

Outputs: ``{"heatmaps": (S, B, H, W, K), "pafs": (S, B, H, W, L, 2)}`` float32.
Targets: ``{"heatmaps": (B, H, W, K), "pafs": (B, H, W, L, 2), "mask": (B, H, W)}``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from posejax import skeleton
from posejax.formulations.base import BOTTOM_UP, Batch, DisplayMap, Formulation, PosePrediction
from posejax.formulations.common import ConvHead, downsample_mask, gaussian_maps
from posejax.geometry import image_to_map, map_to_image
from posejax.parsing.paf import ParsingConfig, group_people


def confidence_maps(
    xy: jax.Array, present: jax.Array, map_size: tuple[int, int], sigma: float
) -> jax.Array:
    """Part confidence maps (Eq. 6-7) of one image: ``(M, K, 2)`` map pixels, ``(M, K)`` bool
    -> ``(H, W, K)``; :func:`posejax.formulations.common.gaussian_maps`."""
    return gaussian_maps(xy, present, map_size, sigma)


def part_affinity_fields(
    xy: jax.Array,
    present: jax.Array,
    limbs: tuple[tuple[int, int], ...],
    map_size: tuple[int, int],
    limb_width: float,
    end_margin: float = 0.0,
) -> jax.Array:
    """Ground-truth PAFs: unit limb direction near each limb, averaged over people (Eq. 8-9).

    Args:
      xy: ``(M, K, 2)`` keypoints in map pixels.
      present: ``(M, K)`` bool, labelled keypoints of real people.
      limbs: ``L`` pairs ``(A, B)``; the field points from A to B.
      map_size: ``(H, W)``.
      limb_width: half-width of the band around the segment, in map pixels.
      end_margin: how far the band extends past each endpoint along the limb, in map pixels
        (0 is Eq. 8 exactly).

    Returns:
      ``(H, W, L, 2)`` float32 fields, ``(x, y)`` last.
    """
    height, width = map_size
    index = np.asarray(limbs, dtype=np.int32)
    start, end = xy[:, index[:, 0]], xy[:, index[:, 1]]  # (M, L, 2)
    delta = end - start
    length = jnp.sqrt(jnp.sum(delta**2, axis=-1))  # (M, L)
    on_limb = present[:, index[:, 0]] & present[:, index[:, 1]] & (length > 1e-6)
    direction = delta / jnp.maximum(length, 1e-6)[..., None]

    # Pixel p relative to the start, split into along-limb and across-limb components.
    rel_x = jnp.arange(width, dtype=jnp.float32)[None, None, None, :] - start[..., 0, None, None]
    rel_y = jnp.arange(height, dtype=jnp.float32)[None, None, :, None] - start[..., 1, None, None]
    ux, uy = direction[..., 0, None, None], direction[..., 1, None, None]
    along = rel_x * ux + rel_y * uy  # (M, L, H, W)
    across = jnp.abs(rel_x * uy - rel_y * ux)
    inside = (
        on_limb[..., None, None]
        & (along >= -end_margin)
        & (along <= length[..., None, None] + end_margin)
        & (across <= limb_width)
    ).astype(jnp.float32)
    count = inside.sum(axis=0)  # (L, H, W): n_c(p) of Eq. 9
    total = jnp.einsum("mlhw,mlc->hwlc", inside, direction)
    return (total / jnp.maximum(count, 1.0).transpose(1, 2, 0)[..., None]).astype(jnp.float32)


class PafHead(nnx.Module):
    """Multi-stage two-branch head of Cao et al. (Fig. 3) on backbone features.

    Each branch is ``depth`` 3x3 conv + ReLU layers and a 1x1 conv (the paper's refinement
    stages use 7x7 kernels; 3x3 here for cost, the backbone already has a large receptive
    field). Input ``(B, H, W, C)`` features; computation in their dtype; output
    ``{"heatmaps": (S, B, H, W, K), "pafs": (S, B, H, W, L, 2)}`` float32, one entry per stage.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_keypoints: int,
        num_limbs: int,
        stages: int,
        channels: int,
        depth: int,
        rngs: nnx.Rngs,
    ):
        self.num_limbs = num_limbs
        branch = dict(depth=depth, rngs=rngs)
        heatmap_branches, paf_branches = [], []
        for stage in range(stages):
            stage_in = in_channels + (num_keypoints + 2 * num_limbs if stage else 0)
            heatmap_branches.append(ConvHead(stage_in, channels, num_keypoints, **branch))
            paf_branches.append(ConvHead(stage_in, channels, 2 * num_limbs, **branch))
        self.heatmap_branches = nnx.List(heatmap_branches)
        self.paf_branches = nnx.List(paf_branches)

    def __call__(self, features: jax.Array) -> dict[str, jax.Array]:
        heatmaps, pafs = [], []
        x = features
        for heatmap_branch, paf_branch in zip(
            self.heatmap_branches, self.paf_branches, strict=True
        ):
            heatmap, paf = heatmap_branch(x), paf_branch(x)  # float32
            heatmaps.append(heatmap)
            pafs.append(paf)
            x = jnp.concatenate(
                [features, heatmap.astype(features.dtype), paf.astype(features.dtype)], axis=-1
            )
        paf_shape = (*pafs[0].shape[:-1], self.num_limbs, 2)
        return {
            "heatmaps": jnp.stack(heatmaps),
            "pafs": jnp.stack([p.reshape(paf_shape) for p in pafs]),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class PartAffinityFields(Formulation):
    """Part Affinity Fields formulation (bottom-up).

    Attributes:
      stages: number of head stages ``S`` (the paper uses 6; 2 keeps CPU runs cheap).
      stage_channels: channels of every hidden conv of the head.
      stage_depth: hidden 3x3 convs per branch and stage.
      sigma: confidence-map Gaussian standard deviation, in map pixels.
      limb_width: PAF half-width in map pixels (``sigma_l`` of the paper).
      extend_limb_ends: extend each PAF band by ``limb_width`` past both endpoints (see the
        module docstring); False gives the paper's Eq. 8 exactly.
      foreground_weight: ``alpha`` of the per-pixel loss weight ``1 + alpha |target|``; 0 is
        the paper's plain masked L2. A positive value keeps short CPU runs from settling on
        all-zero maps when few pixels are positive.
      limbs: pairs of keypoint indices, the PAF channel order (the 19 COCO limbs of OpenPose).
      skip_limbs: append :data:`posejax.skeleton.PAF_SKIP_LIMBS` (elbow-hip, shoulder-knee) to
        ``limbs``, so that people truncated at a shoulder or a hip stay one connected person
        (``L = 23``); False gives the paper's graph.
      parsing: the decoder's settings (:class:`posejax.parsing.paf.ParsingConfig`: matcher,
        thresholds, ILP limits); a mapping is converted.
    """

    stages: int = 2
    stage_channels: int = 64
    stage_depth: int = 3
    sigma: float = 1.0
    limb_width: float = 1.0
    extend_limb_ends: bool = True
    foreground_weight: float = 0.0
    limbs: tuple[tuple[int, int], ...] = skeleton.COCO_LIMBS
    skip_limbs: bool = False
    parsing: ParsingConfig = ParsingConfig()

    input_mode: ClassVar[str] = BOTTOM_UP
    staged_outputs: ClassVar[tuple[str, ...]] = ("heatmaps", "pafs")

    def __post_init__(self):
        # Hydra hands lists; keep the dataclass hashable (it may be a static jit argument).
        limbs = tuple((int(a), int(b)) for a, b in self.limbs)
        if self.skip_limbs:
            # Idempotent, as dataclasses.replace() runs __post_init__ again on the full tuple.
            limbs += tuple(pair for pair in skeleton.PAF_SKIP_LIMBS if pair not in limbs)
        object.__setattr__(self, "limbs", limbs)
        if not isinstance(self.parsing, ParsingConfig):
            try:
                parsing = ParsingConfig(**dict(self.parsing))
            except TypeError as err:
                raise ValueError(f"parsing: {err} (fields of ParsingConfig)") from None
            object.__setattr__(self, "parsing", parsing)
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")

    @property
    def num_stages(self) -> int:
        return self.stages

    @property
    def display_specs(self) -> dict[str, DisplayMap]:
        return {"heatmap_max": DisplayMap.intensity(), "paf_magnitude": DisplayMap.intensity()}

    def make_head(self, in_channels: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return PafHead(
            in_channels,
            num_keypoints=self.num_keypoints,
            num_limbs=len(self.limbs),
            stages=self.stages,
            channels=self.stage_channels,
            depth=self.stage_depth,
            rngs=rngs,
        )

    def encode(self, batch: Batch) -> dict[str, jax.Array]:
        keypoints = jnp.asarray(batch["keypoints"], jnp.float32)
        xy = image_to_map(keypoints[..., :2], self.stride)  # (B, M, K, 2)
        present = (keypoints[..., 2] > 0) & jnp.asarray(batch["valid"], bool)[..., None]
        margin = self.limb_width if self.extend_limb_ends else 0.0
        fields = jax.vmap(
            lambda p, v: part_affinity_fields(
                p, v, self.limbs, self.map_size, self.limb_width, margin
            )
        )
        mask = downsample_mask(jnp.asarray(batch["loss_mask"], jnp.float32), self.stride)
        heatmaps = gaussian_maps(xy, present, self.map_size, self.sigma)
        return {"heatmaps": heatmaps, "pafs": fields(xy, present), "mask": mask}

    def loss(self, outputs, targets) -> tuple[jax.Array, dict[str, jax.Array]]:
        mask = targets["mask"]  # (B, H, W)
        pixels = jnp.maximum(mask.sum(), 1.0)
        # Optional foreground weighting 1 + alpha |target|: with few positive pixels (small
        # people on a coarse map) plain L2 first settles on all-zero maps; alpha = 0 is Eq. 5-6.
        alpha = self.foreground_weight
        heatmap_weight = mask[..., None] * (1.0 + alpha * targets["heatmaps"])
        paf_norm = jnp.linalg.norm(targets["pafs"], axis=-1, keepdims=True)
        paf_weight = mask[..., None, None] * (1.0 + alpha * paf_norm)
        terms = {}
        for stage in range(outputs["heatmaps"].shape[0]):
            heatmap_error = (outputs["heatmaps"][stage] - targets["heatmaps"]) ** 2
            paf_error = (outputs["pafs"][stage] - targets["pafs"]) ** 2
            terms[f"heatmap_stage{stage + 1}"] = jnp.sum(heatmap_error * heatmap_weight) / (
                pixels * heatmap_error.shape[-1]
            )
            terms[f"paf_stage{stage + 1}"] = jnp.sum(paf_error * paf_weight) / (
                pixels * paf_error.shape[-2] * 2
            )
        return sum(terms.values()), terms

    def decode(self, outputs, *, stage: int = -1) -> list[PosePrediction]:
        """Parse people from one stage's maps (``stage`` indexes the stage axis; -1 = last).

        Keypoints not found are ``(0, 0, 0)``.
        """
        index = self.stage_index(stage)
        heatmaps = np.asarray(outputs["heatmaps"][index], dtype=np.float32)
        pafs = np.asarray(outputs["pafs"][index], dtype=np.float32)
        predictions = []
        for image_heatmaps, image_pafs in zip(heatmaps, pafs, strict=True):
            poses, scores = group_people(
                image_heatmaps, image_pafs, limbs=self.limbs, config=self.parsing
            )
            found = poses[..., 2:] > 0
            poses[..., :2] = np.where(found, map_to_image(poses[..., :2], self.stride), 0.0)
            predictions.append(
                PosePrediction(poses=poses.astype(np.float32), scores=scores.astype(np.float32))
            )
        return predictions

    def oracle_outputs(self, targets) -> dict[str, jax.Array]:
        """The target maps at every stage."""
        return {
            key: jnp.broadcast_to(targets[key], (self.stages, *targets[key].shape))
            for key in ("heatmaps", "pafs")
        }

    def display_maps(self, outputs, *, stage: int = -1) -> dict[str, np.ndarray]:
        """Maximum over the parts, and over the limbs of the field's norm, at ``stage``."""
        index = self.stage_index(stage)
        heatmaps = np.asarray(outputs["heatmaps"][index])
        pafs = np.asarray(outputs["pafs"][index])
        return {
            "heatmap_max": heatmaps.max(axis=-1),
            "paf_magnitude": np.linalg.norm(pafs, axis=-1).max(axis=-1),
        }
