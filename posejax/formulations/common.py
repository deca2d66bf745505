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


def refine_peaks_log_parabola(
    maps: np.ndarray, iy: np.ndarray, ix: np.ndarray, *, eps: float = 1e-10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel peak position and height from a parabola fitted to the log of the map.

    For a Gaussian peak the log is exactly quadratic, so three samples around the integer
    maximum along each axis give the true centre and amplitude (the same observation underlies
    DARK, Zhang et al., CVPR 2020). Peaks on the border keep offset 0 along that axis.

    Args:
      maps: ``(N, H, W)`` maps.
      iy, ix: ``(N,)`` integer peak positions.

    Returns:
      ``(dy, dx, peak)``: offsets in ``[-0.5, 0.5]`` map pixels and the fitted peak value, each
      ``(N,)``.
    """
    n, h, w = maps.shape
    logm = np.log(np.maximum(maps, eps))
    rows = np.arange(n)
    centre = logm[rows, iy, ix]

    def fit(lm1, lp1, inside):
        # l(t) = l0 + b t + a t^2 through t = -1, 0, 1; vertex at t* = -b / (2a).
        b, a = 0.5 * (lp1 - lm1), 0.5 * (lm1 - 2.0 * centre + lp1)
        ok = inside & (a < 0)
        safe_a = np.where(ok, a, -1.0)
        t = np.where(ok, np.clip(-b / (2.0 * safe_a), -0.5, 0.5), 0.0)
        gain = np.where(ok, b * t + a * t**2, 0.0)
        return t, gain

    dx, gain_x = fit(
        logm[rows, iy, np.clip(ix - 1, 0, w - 1)],
        logm[rows, iy, np.clip(ix + 1, 0, w - 1)],
        (ix > 0) & (ix < w - 1),
    )
    dy, gain_y = fit(
        logm[rows, np.clip(iy - 1, 0, h - 1), ix],
        logm[rows, np.clip(iy + 1, 0, h - 1), ix],
        (iy > 0) & (iy < h - 1),
    )
    peak = np.where(maps[rows, iy, ix] > eps, np.exp(centre + gain_x + gain_y), 0.0)
    return dy, dx, peak
