"""Sub-pixel peak refinement shared by decoders and parsing (NumPy only, no model code).

A neutral module below both ``posejax.formulations`` (the heatmap decoder) and
``posejax.parsing`` (PAF part candidates), so that neither has to import the other for it.
"""

from __future__ import annotations

import numpy as np


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
