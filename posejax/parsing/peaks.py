"""Part candidates: local maxima of confidence maps with sub-pixel refinement.

Shape legend: ``H, W`` map size, ``K`` parts, ``N`` candidates over all parts.

Coordinates are map pixels with the project's pixel-centre convention (``posejax.geometry``):
the centre of map pixel ``(row r, col c)`` is ``(x, y) = (c, r)``.

Maps are not upsampled before peak finding (the OpenPose reference resizes them to the image
first): the sub-pixel refinement below recovers the position of a Gaussian peak exactly, so
upsampling would only cost time (an 8x larger map to scan).

References:
  Cao et al., "Realtime Multi-Person 2D Pose Estimation using Part Affinity Fields", CVPR 2017,
  Sec. 2.4 (part candidates by non-maximum suppression of the confidence maps).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from posejax.subpixel import log_parabola_vertex

# Below this value a map is treated as this value inside the log of the Gaussian fit, so that
# zero or negative network outputs next to a peak give a finite (clamped) offset.
_LOG_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class PartCandidates:
    """All part candidates of one image, sorted by part.

    Attributes:
      xy: ``(N, 2)`` float64 sub-pixel positions ``(x, y)`` in map pixels.
      score: ``(N,)`` float64 confidence-map value at the peak pixel.
      part: ``(N,)`` int64 part index of each candidate, non-decreasing.
      offsets: ``(K + 1,)`` int64; the candidates of part ``k`` are ``offsets[k]:offsets[k + 1]``.
    """

    xy: np.ndarray
    score: np.ndarray
    part: np.ndarray
    offsets: np.ndarray

    def of_part(self, k: int) -> slice:
        """Slice of the candidates of part ``k``."""
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))


# The eight neighbours (dr, dc), the four earlier in raster order first.
_NEIGHBOURS = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)])


def find_peaks(
    heatmaps: np.ndarray,
    *,
    threshold: float = 0.1,
    subpixel: bool = True,
    max_per_part: int | None = None,
) -> PartCandidates:
    """Local maxima of each confidence map above ``threshold``.

    A pixel is a peak when it is strictly above ``threshold`` and the maximum of its 3x3
    neighbourhood (the non-maximum suppression of a 3x3 max filter, written as eight
    comparisons of the above-threshold pixels with their neighbours; ties are settled in the
    same pass). On a plateau of equal values (e.g. a keypoint exactly between
    two pixel centres) only the last pixel in raster order is kept, so one keypoint never
    yields two candidates: a pixel must be ``>=`` its four earlier neighbours and ``>`` its
    four later ones.

    Args:
      heatmaps: ``(H, W, K)`` confidence maps.
      threshold: minimum map value of a candidate (OpenPose's ``thre1``).
      subpixel: refine each peak with a per-axis parabola through the logarithm of the peak and
        its two neighbours, which is exact for a Gaussian peak; offsets are clamped to half a
        pixel. Without it positions are the integer pixel centres.
      max_per_part: keep at most this many candidates per part, the highest ones (None: all).
        Bounds the cost of parsing the noisy maps of an untrained network, whose number of
        candidate pairs would otherwise grow with the square of the number of noise peaks.

    Returns:
      The :class:`PartCandidates`, ordered by part, then raster order.
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    height, width, num_parts = maps.shape
    # Only pixels above the threshold can be peaks: compare those with their eight neighbours
    # (gathered by index; outside the map counts as -inf) instead of comparing whole shifted
    # maps, which costs ~5x more on maps where a few percent of the pixels are above it.
    values_all = maps.reshape(-1)
    flat = np.flatnonzero(values_all > threshold)
    pixel, part = np.divmod(flat, num_parts)
    row, col = np.divmod(pixel, width)
    values = values_all[flat]
    r = row[None, :] + _NEIGHBOURS[:, :1]  # (8, n)
    c = col[None, :] + _NEIGHBOURS[:, 1:]
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    step = (_NEIGHBOURS[:, 0] * width + _NEIGHBOURS[:, 1]) * num_parts
    neighbour = np.where(inside, values_all[np.where(inside, flat + step[:, None], 0)], -np.inf)
    # Earlier in raster order: >= (ties go to the last pixel); later: >.
    keep = (values >= neighbour[:4]).all(axis=0) & (values > neighbour[4:]).all(axis=0)
    pixel, part = pixel[keep], part[keep]
    order = np.argsort(part, kind="stable")
    pixel, part = pixel[order], part[order]
    if max_per_part is not None and part.size > max_per_part:
        values = maps.reshape(-1, num_parts)[pixel, part]
        by_score = np.lexsort((-values, part))
        first = np.searchsorted(part, part[by_score])
        rank = np.empty_like(by_score)
        rank[by_score] = np.arange(by_score.size) - first
        keep = rank < max_per_part
        pixel, part = pixel[keep], part[keep]
    row, col = np.divmod(pixel, width)

    x = col.astype(np.float64)
    y = row.astype(np.float64)
    if subpixel and part.size:
        x += _gaussian_offset(maps, part, row, col, 0, 1, width)
        y += _gaussian_offset(maps, part, row, col, 1, 0, height)

    offsets = np.searchsorted(part, np.arange(num_parts + 1)).astype(np.int64)
    return PartCandidates(
        xy=np.stack([x, y], axis=-1),
        score=maps[row, col, part].astype(np.float64),
        part=part.astype(np.int64),
        offsets=offsets,
    )


def _gaussian_offset(maps, part, row, col, dr, dc, size):
    """Sub-pixel offset along one axis from the peak and its two neighbours on that axis.

    Only the three values per peak are read (not the log of the whole map: that would cost
    more than the rest of the parsing). Peaks on the border get offset 0 along that axis.
    """
    index = row if dr else col
    inside = (index > 0) & (index < size - 1)
    offset = np.zeros(part.size, dtype=np.float64)
    p, r, c = part[inside], row[inside], col[inside]
    offset[inside], _ = log_parabola_vertex(
        maps[r - dr, c - dc, p], maps[r, c, p], maps[r + dr, c + dc, p], eps=_LOG_FLOOR
    )
    return offset
