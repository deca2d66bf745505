"""Small pieces several formulations share: Gaussian targets, mask downsampling, conv heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from posejax.models.conv import Conv


def gaussian_maps(
    xy: jax.Array, present: jax.Array, map_size: tuple[int, int], sigma: float
) -> jax.Array:
    """Per-joint Gaussian maps, maximum over people.

    ``G_k(p) = max_m exp(-|p - x_{m,k}|^2 / (2 sigma^2))`` on the map's pixel centres
    (Tompson et al. 2014; Cao et al. 2017, Eq. 6-7). Leading batch axes ``...`` are kept.

    Args:
      xy: ``(..., M, K, 2)`` keypoints in map pixels.
      present: ``(..., M, K)`` bool, which (person, joint) pairs get a Gaussian.
      map_size: ``(H, W)``.
      sigma: standard deviation in map pixels.

    Returns:
      ``(..., H, W, K)`` float32 in ``[0, 1]``.
    """
    height, width = map_size
    gx = jnp.exp(-((jnp.arange(width) - xy[..., 0:1]) ** 2) / (2 * sigma**2))  # (..., M, K, W)
    gy = jnp.exp(-((jnp.arange(height) - xy[..., 1:2]) ** 2) / (2 * sigma**2))  # (..., M, K, H)
    maps = jnp.where(present[..., None, None], gy[..., :, None] * gx[..., None, :], 0.0)
    return jnp.moveaxis(maps.max(axis=-4), -3, -1).astype(jnp.float32)


def downsample_mask(mask: jax.Array, stride: int) -> jax.Array:
    """``(B, h, w)`` {0, 1} mask -> ``(B, h / stride, w / stride)`` by min-pooling.

    A map cell keeps weight 1 only when every input pixel it covers does, so ignore regions
    never leak into the loss.
    """
    b, h, w = mask.shape
    blocks = mask[:, : h - h % stride, : w - w % stride].reshape(
        b, h // stride, stride, w // stride, stride
    )
    return blocks.min(axis=(2, 4))


def promote_to_input_dtype(args, /, *, dtype=None, inexact=True):
    """``promote_dtype`` hook for nnx layers: compute in the inputs' dtype (e.g. bfloat16).

    Heads are built before they know the run's precision; with this hook a head follows the
    dtype of the features it receives, while its parameters stay float32.
    """
    del dtype, inexact
    compute_dtype = args[0].dtype
    return tuple(None if a is None else jnp.asarray(a, compute_dtype) for a in args)


class ConvHead(nnx.Module):
    """``depth`` 3x3 conv + ReLU layers, then a 1x1 conv to ``out_channels``; float32 out."""

    def __init__(
        self, in_channels: int, hidden: int, out_channels: int, *, depth: int = 1, rngs: nnx.Rngs
    ):
        layers = []
        ch = in_channels
        for _ in range(depth):
            layers.append(Conv(ch, hidden, (3, 3), promote_dtype=promote_to_input_dtype, rngs=rngs))
            ch = hidden
        self.hidden = nnx.List(layers)
        self.out = Conv(ch, out_channels, (1, 1), promote_dtype=promote_to_input_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.hidden:
            x = jax.nn.relu(conv(x))
        return self.out(x).astype(jnp.float32)


class KeyedHead(nnx.Module):
    """A :class:`ConvHead` whose maps are returned under one key: ``{key: (B, H, W, C)}``."""

    def __init__(self, key: str, conv: ConvHead):
        self.key = key
        self.conv = conv

    def __call__(self, features: jax.Array) -> dict[str, jax.Array]:
        return {self.key: self.conv(features)}
