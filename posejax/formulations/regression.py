"""Direct coordinate regression (DeepPose), top-down.

The head pools the backbone features globally and an MLP regresses the ``K`` joint coordinates,
normalised to the input crop, plus one visibility logit per joint. Optional cascade stages
refine every joint by a displacement regressed from features sampled around the previous
estimate.

Normalised coordinates (DeepPose Sec. 2, "pose vector normalisation" ``N(y; b)``): the input
crop *is* the person box ``b``, so a pixel ``(x, y)`` maps to ``u = (x + 0.5) / w - 0.5`` and
``v = (y + 0.5) / h - 0.5``. With the pixel-centre convention (``posejax.skeleton``) the crop
spans ``[-0.5, w - 0.5]``, hence ``u`` spans ``[-0.5, 0.5]`` with 0 at the crop centre.

Confidence: regression has no natural per-joint score (an L2 regressor outputs a point, not a
distribution), but the COCO AP and the PCK curves rank and threshold on scores. The head
therefore also predicts a visibility logit trained with binary cross-entropy against "the joint
is labelled in this crop" (``v > 0``); the decoded keypoint score is ``sigmoid(logit)``, the
person score the mean keypoint score. The BCE weight (``visibility_weight``) can be set to 0 to
train the pure DeepPose objective (the scores then stay uninformative).

Cascade (DeepPose Sec. 3.1, Eq. 6-7): the paper re-crops the *image* around each joint's
previous estimate (a box of size ``sigma * diam(y)``), runs a separate network on each crop and
regresses the displacement. Here every stage reuses the shared backbone features instead: a
``G x G`` grid of bilinearly sampled feature vectors around each previous estimate (spanning
``refine_extent`` of the crop, i.e. of the person box), projected per point, fed to a stage MLP
shared by the joints with a learned per-joint embedding. The previous estimate is held fixed
(``stop_gradient``) as in the paper's stage-wise training, and each stage has its own L2 loss.
This keeps the cascade one jittable forward pass and costs no extra backbone evaluation, but the
refiners see features at the backbone's output stride rather than higher-resolution pixels.

References:
  Toshev & Szegedy, "DeepPose: Human Pose Estimation via Deep Neural Networks", CVPR 2014.

Shape legend: ``B`` batch, ``S`` stages, ``K`` keypoints, ``H, W`` feature-map size, ``C``
feature channels, ``G`` refinement grid side, ``h, w`` input size.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from posejax import geometry
from posejax.formulations.base import (
    TOP_DOWN,
    Batch,
    Formulation,
    Outputs,
    PosePrediction,
    Targets,
)
from posejax.formulations.common import promote_to_input_dtype

# Outputs and targets keys.
COORDS = "coords"  # outputs: (S, B, K, 2) per-stage estimates; targets: (B, K, 2)
VISIBILITY_LOGITS = "visibility_logits"  # outputs: (B, K)
WEIGHTS = "weights"  # targets: (B, K) 1 where person 0 is valid and the joint labelled
EXAMPLE_WEIGHTS = "example_weights"  # targets: (B,) 1 where person 0 is valid


def normalise_coordinates(xy: jax.Array, input_size: tuple[int, int]) -> jax.Array:
    """Input pixels ``(..., 2)`` -> crop-normalised ``[-0.5, 0.5]`` coordinates (``N(y; b)``)."""
    h, w = input_size
    size = jnp.asarray([w, h], dtype=jnp.float32)
    return (xy + 0.5) / size - 0.5


def denormalise_coordinates(uv, input_size: tuple[int, int]):
    """Inverse of :func:`normalise_coordinates` (NumPy or jnp)."""
    h, w = input_size
    size = np.asarray([w, h], dtype=np.float32)
    return (uv + 0.5) * size - 0.5


def bilinear_sample(features: jax.Array, points: jax.Array) -> jax.Array:
    """Bilinear feature lookup with border clamping.

    Args:
      features: ``(B, H, W, C)``.
      points: ``(B, N, 2)`` ``(x, y)`` in map coordinates (cell centres at integers).

    Returns:
      ``(B, N, C)`` in the features' dtype.
    """
    _, height, width, _ = features.shape
    x = jnp.clip(points[..., 0], 0.0, width - 1.0)
    y = jnp.clip(points[..., 1], 0.0, height - 1.0)
    x0 = jnp.floor(x)
    y0 = jnp.floor(y)
    wx = (x - x0)[..., None].astype(features.dtype)
    wy = (y - y0)[..., None].astype(features.dtype)
    x0i = x0.astype(jnp.int32)
    y0i = y0.astype(jnp.int32)
    x1i = jnp.minimum(x0i + 1, width - 1)
    y1i = jnp.minimum(y0i + 1, height - 1)
    batch = jnp.arange(features.shape[0])[:, None]
    top = features[batch, y0i, x0i] * (1 - wx) + features[batch, y0i, x1i] * wx
    bottom = features[batch, y1i, x0i] * (1 - wx) + features[batch, y1i, x1i] * wx
    return top * (1 - wy) + bottom * wy


class _MLP(nnx.Module):
    """``depth`` x (Linear + ReLU) of width ``width``."""

    def __init__(self, in_features: int, width: int, depth: int, *, rngs: nnx.Rngs):
        layers = []
        for _ in range(depth):
            layers.append(
                nnx.Linear(in_features, width, promote_dtype=promote_to_input_dtype, rngs=rngs)
            )
            in_features = width
        self.layers = nnx.List(layers)
        self.out_features = in_features

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = jax.nn.relu(layer(x))
        return x


def _window_offsets(grid: int, extent: float) -> np.ndarray:
    """``(G * G, 2)`` ``(x, y)`` offsets of a ``G x G`` grid spanning ``extent`` (row-major)."""
    offsets = np.linspace(-extent / 2.0, extent / 2.0, grid) if grid > 1 else np.zeros(1)
    oy, ox = np.meshgrid(offsets, offsets, indexing="ij")
    return np.stack([ox, oy], axis=-1).reshape(-1, 2).astype(np.float32)


def _small_init():
    # Outputs start near 0 (crop centre / no displacement) so early training is stable.
    return nnx.initializers.variance_scaling(0.01, "fan_in", "truncated_normal")


class RefinementStage(nnx.Module):
    """One DeepPose cascade stage on shared features (see the module docstring).

    Samples a ``G x G`` grid spanning ``extent`` of the crop around each joint's estimate,
    projects every sample to ``channels``, and regresses a displacement in units of half the
    window (so a displacement of 1 moves the joint to the edge of the window it looked at).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_keypoints: int,
        stride: int,
        input_size: tuple[int, int],
        grid: int,
        extent: float,
        channels: int,
        hidden_width: int,
        hidden_layers: int,
        rngs: nnx.Rngs,
    ):
        self.stride = stride
        self.input_size = input_size
        self.extent = extent
        self.grid = grid
        self.project = nnx.Linear(
            in_channels, channels, promote_dtype=promote_to_input_dtype, rngs=rngs
        )
        self.joint_embedding = nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (num_keypoints, hidden_width))
        )
        self.input_layer = nnx.Linear(
            grid * grid * channels, hidden_width, promote_dtype=promote_to_input_dtype, rngs=rngs
        )
        self.mlp = _MLP(hidden_width, hidden_width, max(hidden_layers - 1, 0), rngs=rngs)
        self.displacement = nnx.Linear(
            hidden_width,
            2,
            kernel_init=_small_init(),
            promote_dtype=promote_to_input_dtype,
            rngs=rngs,
        )

    def __call__(self, features: jax.Array, previous: jax.Array) -> jax.Array:
        """Features ``(B, H, W, C)``, previous normalised estimate ``(B, K, 2)`` -> refined."""
        batch, num_keypoints, _ = previous.shape
        previous = jax.lax.stop_gradient(previous)
        # Window points in normalised crop units -> input pixels -> map coordinates.
        window = previous[:, :, None, :] + _window_offsets(self.grid, self.extent)  # (B,K,G*G,2)
        pixels = denormalise_coordinates(window, self.input_size)
        points = geometry.image_to_map(pixels, self.stride).reshape(batch, -1, 2)
        sampled = bilinear_sample(features, points)  # (B, K*G*G, C)
        sampled = jax.nn.relu(self.project(sampled))
        sampled = sampled.reshape(batch, num_keypoints, -1)  # (B, K, G*G*channels)
        hidden = self.input_layer(sampled) + self.joint_embedding[...].astype(sampled.dtype)
        hidden = self.mlp(jax.nn.relu(hidden))
        step = self.displacement(hidden).astype(jnp.float32) * (self.extent / 2.0)
        return previous + step


class CoordinateRegressionHead(nnx.Module):
    """Global average pooling + MLP -> ``K`` normalised coordinates and visibility logits.

    Returns ``{"coords": (S, B, K, 2), "visibility_logits": (B, K)}`` in float32; ``coords[s]``
    is the estimate after stage ``s + 1`` (the last one is the prediction). Stage axis first,
    as in every formulation's staged outputs (:attr:`Formulation.staged_outputs`).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_keypoints: int,
        stride: int,
        input_size: tuple[int, int],
        hidden_width: int,
        hidden_layers: int,
        stages: int,
        refine_grid: int,
        refine_extent: float,
        refine_channels: int,
        rngs: nnx.Rngs,
    ):
        self.num_keypoints = num_keypoints
        self.mlp = _MLP(in_channels, hidden_width, hidden_layers, rngs=rngs)
        self.coords = nnx.Linear(
            self.mlp.out_features,
            num_keypoints * 2,
            kernel_init=_small_init(),
            promote_dtype=promote_to_input_dtype,
            rngs=rngs,
        )
        self.visibility = nnx.Linear(
            self.mlp.out_features,
            num_keypoints,
            promote_dtype=promote_to_input_dtype,
            rngs=rngs,
        )
        self.stages = nnx.List(
            [
                RefinementStage(
                    in_channels,
                    num_keypoints=num_keypoints,
                    stride=stride,
                    input_size=input_size,
                    grid=refine_grid,
                    extent=refine_extent,
                    channels=refine_channels,
                    hidden_width=hidden_width,
                    hidden_layers=hidden_layers,
                    rngs=rngs,
                )
                for _ in range(stages - 1)
            ]
        )

    def __call__(self, features: jax.Array) -> dict[str, jax.Array]:
        # Accumulate the pooling in float32 (a bfloat16 sum over H * W cells loses digits).
        pooled = jnp.mean(features, axis=(1, 2), dtype=jnp.float32).astype(features.dtype)
        hidden = self.mlp(pooled)
        batch = features.shape[0]
        coords = self.coords(hidden).astype(jnp.float32).reshape(batch, self.num_keypoints, 2)
        estimates = [coords]
        for stage in self.stages:
            estimates.append(stage(features, estimates[-1]))
        return {
            COORDS: jnp.stack(estimates),
            VISIBILITY_LOGITS: self.visibility(hidden).astype(jnp.float32),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoordinateRegression(Formulation):
    """DeepPose-style direct regression of crop-normalised joint coordinates.

    Attributes:
      hidden_width: width of the MLP layers (head and refinement stages).
      hidden_layers: number of hidden Linear + ReLU layers after global average pooling (two,
        like DeepPose's two fully connected layers on AlexNet, narrower).
      stages: cascade length; 1 is the single-shot regressor (DeepPose stage 1).
      refine_grid: side ``G`` of the feature-sample grid of a refinement stage.
      refine_extent: side of that grid as a fraction of the crop (the paper's ``sigma *
        diam(y)`` window, here relative to the person box the crop was made from).
      refine_channels: channels each sampled feature vector is projected to.
      visibility_weight: weight of the visibility BCE term (0 trains pure DeepPose).
    """

    hidden_width: int = 512
    hidden_layers: int = 2
    stages: int = 1
    refine_grid: int = 5
    refine_extent: float = 0.25
    refine_channels: int = 32
    visibility_weight: float = 0.1

    input_mode = TOP_DOWN
    staged_outputs = (COORDS,)

    def __post_init__(self):
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if self.refine_grid < 1:
            raise ValueError(f"refine_grid must be >= 1, got {self.refine_grid}")

    @property
    def num_stages(self) -> int:
        return self.stages

    @property
    def batch_keys(self) -> tuple[str, ...]:
        return ("keypoints", "valid")

    def make_head(self, in_channels: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return CoordinateRegressionHead(
            in_channels,
            num_keypoints=self.num_keypoints,
            stride=self.stride,
            input_size=tuple(self.input_size),
            hidden_width=self.hidden_width,
            hidden_layers=self.hidden_layers,
            stages=self.stages,
            refine_grid=self.refine_grid,
            refine_extent=self.refine_extent,
            refine_channels=self.refine_channels,
            rngs=rngs,
        )

    def encode(self, batch: Batch) -> Targets:
        """Person 0's normalised coordinates and labelled-joint weights.

        Returns:
          ``coords`` ``(B, K, 2)`` (0 for unlabelled joints), ``weights`` ``(B, K)`` (1 where
          ``v > 0`` and person 0 is valid), ``example_weights`` ``(B,)``.
        """
        keypoints = jnp.asarray(batch["keypoints"], jnp.float32)[:, 0]  # (B, K, 3)
        valid = jnp.asarray(batch["valid"])[:, 0].astype(jnp.float32)  # (B,)
        weights = (keypoints[..., 2] > 0).astype(jnp.float32) * valid[:, None]
        coords = normalise_coordinates(keypoints[..., :2], self.input_size) * weights[..., None]
        return {COORDS: coords, WEIGHTS: weights, EXAMPLE_WEIGHTS: valid}

    def loss(self, outputs: Outputs, targets: Targets) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Per-stage L2 on normalised coordinates (DeepPose Eq. 2 / 7) + visibility BCE.

        Each stage's term is ``sum_k w_k ||y_k - psi_k||^2 / sum_k w_k`` over the batch's
        labelled joints; the total is their sum plus ``visibility_weight`` times the mean BCE.
        """
        weights = targets[WEIGHTS]
        num_labelled = jnp.maximum(jnp.sum(weights), 1.0)
        terms = {}
        total = jnp.zeros((), jnp.float32)
        for s in range(outputs[COORDS].shape[0]):
            squared = jnp.sum((outputs[COORDS][s] - targets[COORDS]) ** 2, axis=-1)
            # where, not multiply: an unlabelled joint's prediction must not reach the loss even
            # when it is inf/nan.
            term = jnp.sum(jnp.where(weights > 0, squared, 0.0)) / num_labelled
            terms[f"coord_stage{s + 1}"] = term
            total = total + term
        example = targets[EXAMPLE_WEIGHTS][:, None]
        bce = optax.sigmoid_binary_cross_entropy(outputs[VISIBILITY_LOGITS], weights)
        num_joints = jnp.maximum(jnp.sum(example) * weights.shape[-1], 1.0)
        terms["visibility"] = jnp.sum(bce * example) / num_joints
        total = total + self.visibility_weight * terms["visibility"]
        return total, terms

    def oracle_outputs(self, targets: Targets) -> Outputs:
        """The target coordinates at every stage; labelled joints get score ~1."""
        coords = targets[COORDS]
        stacked = jnp.broadcast_to(coords, (self.stages, *coords.shape))
        logits = jnp.where(targets[WEIGHTS] > 0, 10.0, -10.0)
        return {COORDS: stacked, VISIBILITY_LOGITS: logits}

    def decode(self, outputs: Outputs, *, stage: int = -1) -> list[PosePrediction]:
        """A stage's estimate (the last by default) in input pixels; score = sigmoid(visibility
        logit), the same at every stage."""
        coords = np.asarray(outputs[COORDS][self.stage_index(stage)], np.float32)  # (B, K, 2)
        logits = np.asarray(outputs[VISIBILITY_LOGITS], np.float32)
        scores = 1.0 / (1.0 + np.exp(-logits))
        pixels = denormalise_coordinates(coords, self.input_size)
        poses = np.concatenate([pixels, scores[..., None]], axis=-1).astype(np.float32)
        return [
            PosePrediction(poses=pose[None], scores=np.asarray([pose[:, 2].mean()], np.float32))
            for pose in poses
        ]
