"""Small pieces several formulations share: mask downsampling, conv heads, refinement."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


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
            layers.append(
                nnx.Conv(ch, hidden, (3, 3), promote_dtype=promote_to_input_dtype, rngs=rngs)
            )
            ch = hidden
        self.hidden = nnx.List(layers)
        self.out = nnx.Conv(
            ch, out_channels, (1, 1), promote_dtype=promote_to_input_dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.hidden:
            x = jax.nn.relu(conv(x))
        return self.out(x).astype(jnp.float32)


def log_parabola_vertex(
    before: np.ndarray, centre: np.ndarray, after: np.ndarray, *, eps: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Vertex of the parabola through ``log`` of three equally spaced samples.

    For a Gaussian peak the log is exactly quadratic, so the vertex is the true centre and the
    height gain the true amplitude (the observation behind DARK, Zhang et al., CVPR 2020).
    Samples without a maximum in the middle (flat or convex log) give offset 0 and gain 0.

    Args:
      before, centre, after: map values at ``t = -1, 0, 1`` along one axis, same shape.

    Returns:
      ``(offset, log_gain)``: vertex position ``t*`` in ``[-0.5, 0.5]`` and the increase of the
      log value from ``t = 0`` to the vertex.
    """
    lm1, l0, lp1 = (
        np.log(np.maximum(np.asarray(v, np.float64), eps)) for v in (before, centre, after)
    )
    b, a = 0.5 * (lp1 - lm1), 0.5 * (lm1 - 2.0 * l0 + lp1)  # l(t) = l0 + b t + a t^2
    ok = a < 0
    t = np.where(ok, np.clip(-b / (2.0 * np.where(ok, a, -1.0)), -0.5, 0.5), 0.0)
    return t, np.where(ok, b * t + a * t**2, 0.0)


def refine_peaks_log_parabola(
    maps: np.ndarray, iy: np.ndarray, ix: np.ndarray, *, eps: float = 1e-10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel position and height of integer peaks ``(iy, ix)`` of ``(N, H, W)`` maps.

    Reads only the peak and its four neighbours (:func:`log_parabola_vertex` per axis). Peaks
    on the border keep offset 0 along that axis.

    Returns:
      ``(dy, dx, peak)``: offsets in map pixels and the fitted peak value, each ``(N,)``.
    """
    n, h, w = maps.shape
    rows = np.arange(n)
    centre = maps[rows, iy, ix]
    dx, gain_x = log_parabola_vertex(
        maps[rows, iy, np.clip(ix - 1, 0, w - 1)],
        centre,
        maps[rows, iy, np.clip(ix + 1, 0, w - 1)],
        eps=eps,
    )
    dy, gain_y = log_parabola_vertex(
        maps[rows, np.clip(iy - 1, 0, h - 1), ix],
        centre,
        maps[rows, np.clip(iy + 1, 0, h - 1), ix],
        eps=eps,
    )
    inside_x, inside_y = (ix > 0) & (ix < w - 1), (iy > 0) & (iy < h - 1)
    dx, gain_x = np.where(inside_x, dx, 0.0), np.where(inside_x, gain_x, 0.0)
    dy, gain_y = np.where(inside_y, dy, 0.0), np.where(inside_y, gain_y, 0.0)
    log_centre = np.log(np.maximum(centre.astype(np.float64), eps))
    peak = np.where(centre > eps, np.exp(log_centre + gain_x + gain_y), 0.0)
    return dy, dx, peak
