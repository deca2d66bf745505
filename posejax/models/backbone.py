"""The shared ResNet-style backbone (Flax NNX).

Every formulation sits on the same features: a ResNet with basic residual blocks (He et al.,
"Deep Residual Learning for Image Recognition", CVPR 2016) followed by a light top-down merge
(as in feature pyramid networks, Lin et al. CVPR 2017) that brings the deepest features back to
the configured output stride, so heads see large receptive fields at fine resolution.

GroupNorm rather than BatchNorm: no mutable batch statistics, so the train step stays a pure
function of (parameters, batch) and data parallelism needs no cross-device statistics.

Shape legend: ``B`` batch, ``h, w`` input size, ``H, W = h / output_stride, w / output_stride``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from posejax.models.conv import Conv
from posejax.models.norm import GroupNorm


def _groups(channels: int, preferred: int) -> int:
    groups = min(preferred, channels)
    while channels % groups:
        groups -= 1
    return groups


class ConvNormAct(nnx.Module):
    """3x3 (or kxk) convolution, GroupNorm, optional ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        act: bool = True,
        groups: int = 8,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.conv = Conv(
            in_channels,
            out_channels,
            (kernel, kernel),
            strides=stride,
            padding="SAME",
            use_bias=False,
            dtype=dtype,
            rngs=rngs,
        )
        # The ReLU is part of the norm op (one hand-written backward, posejax.models.norm).
        self.norm = GroupNorm(
            out_channels, num_groups=_groups(out_channels, groups), relu=act, dtype=dtype
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.conv(x))


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        groups: int,
        dtype,
        rngs: nnx.Rngs,
    ):
        self.conv1 = ConvNormAct(
            in_channels, out_channels, stride=stride, groups=groups, dtype=dtype, rngs=rngs
        )
        self.conv2 = ConvNormAct(
            out_channels, out_channels, act=False, groups=groups, dtype=dtype, rngs=rngs
        )
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            ConvNormAct(
                in_channels,
                out_channels,
                kernel=1,
                stride=stride,
                act=False,
                groups=groups,
                dtype=dtype,
                rngs=rngs,
            )
            if needs_projection
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        return jax.nn.relu(self.conv2(self.conv1(x)) + residual)


def _upsample2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling of ``(B, H, W, C)``."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ResNetBackbone(nnx.Module):
    """ResNet with basic blocks and a top-down merge back to ``output_stride``.

    Args:
      stem_width: channels of the two stem convolutions (the first has stride 2).
      widths: channels of each stage.
      blocks: residual blocks per stage.
      strides: stride of each stage's first block (each 1 or 2).
      output_stride: stride of the returned features; must be one of the stage strides.
      out_channels: channels of the returned features.
      groups: preferred GroupNorm group count.
      dtype: compute dtype (``bfloat16`` for mixed precision; parameters stay float32).

    Input ``(B, h, w, 3)`` float in the compute dtype; output ``(B, H, W, out_channels)``.
    """

    def __init__(
        self,
        *,
        stem_width: int = 16,
        widths: Sequence[int] = (32, 64, 96),
        blocks: Sequence[int] = (1, 1, 1),
        strides: Sequence[int] = (2, 2, 2),
        output_stride: int = 4,
        out_channels: int = 64,
        groups: int = 8,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if not (len(widths) == len(blocks) == len(strides)):
            raise ValueError(
                f"backbone: widths {list(widths)}, blocks {list(blocks)} and strides "
                f"{list(strides)} must have the same length (one entry per stage)"
            )
        stage_strides = []
        current = 2
        for s in strides:
            if s not in (1, 2):
                raise ValueError(f"backbone: stage strides must be 1 or 2, got {list(strides)}")
            current *= s
            stage_strides.append(current)
        if output_stride not in stage_strides:
            raise ValueError(
                f"backbone.output_stride={output_stride} is not reachable: the stages produce "
                f"strides {stage_strides} (stem stride 2 times the stage strides)"
            )
        self.output_stride = output_stride
        self.out_channels = out_channels
        self.stage_strides = tuple(stage_strides)

        self.stem = nnx.Sequential(
            ConvNormAct(3, stem_width, stride=2, groups=groups, dtype=dtype, rngs=rngs),
            ConvNormAct(stem_width, stem_width, groups=groups, dtype=dtype, rngs=rngs),
        )
        stages = []
        in_ch = stem_width
        for width, n, s in zip(widths, blocks, strides, strict=True):
            layers = [BasicBlock(in_ch, width, stride=s, groups=groups, dtype=dtype, rngs=rngs)]
            layers += [
                BasicBlock(width, width, stride=1, groups=groups, dtype=dtype, rngs=rngs)
                for _ in range(n - 1)
            ]
            stages.append(nnx.Sequential(*layers))
            in_ch = width
        self.stages = nnx.List(stages)
        # Lateral 1x1 projections of every stage from the output stride down to the deepest.
        first = stage_strides.index(output_stride)
        last = max(i for i, s in enumerate(stage_strides) if s == stage_strides[-1])
        self._merge_from = first
        self.laterals = nnx.List(
            [
                Conv(widths[i], out_channels, (1, 1), dtype=dtype, rngs=rngs)
                for i in range(first, last + 1)
            ]
        )
        self.smooth = ConvNormAct(out_channels, out_channels, groups=groups, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        merged = None
        for lateral, feat in zip(
            reversed(self.laterals), reversed(features[self._merge_from :]), strict=True
        ):
            proj = lateral(feat)
            if merged is None:
                merged = proj
            else:
                if merged.shape[1] != proj.shape[1]:
                    merged = _upsample2x(merged)[:, : proj.shape[1], : proj.shape[2]]
                merged = merged + proj
        return self.smooth(merged)
