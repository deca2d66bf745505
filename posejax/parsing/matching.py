"""Bipartite matching of the part candidates of one limb.

Both matchers take a score matrix between the ``A`` candidates of a limb's first part and the
``B`` candidates of its second part, plus a validity mask, and return matched index pairs in
which every candidate appears at most once and no invalid pair ever appears.

References:
  Cao et al., "Realtime Multi-Person 2D Pose Estimation using Part Affinity Fields", CVPR 2017,
  Sec. 2.4, Eq. 12-13 (per-limb maximum-weight bipartite matching).
  Kuhn, "The Hungarian method for the assignment problem", Naval Res. Logist. Q., 1955.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

MATCHERS = ("greedy", "optimal")


def match_greedy(scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching: take valid pairs by decreasing score while both ends are free.

    This is what the OpenPose reference implementation does; it is a 1/2-approximation of the
    maximum-weight matching. Unlike :func:`match_optimal` it takes valid pairs whatever the
    sign of their score (``group_people`` only calls pairs with a positive score valid).

    Args:
      scores: ``(A, B)`` pair scores.
      valid: ``(A, B)`` bool, pairs that may be matched.

    Returns:
      ``(rows, cols)`` int64 arrays of the matched pairs, by decreasing score.
    """
    rows, cols = np.nonzero(valid)
    taken = match_greedy_grouped(np.zeros(rows.size, np.int64), rows, cols, scores[rows, cols])
    return rows[taken].astype(np.int64), cols[taken].astype(np.int64)


def match_greedy_grouped(
    group: np.ndarray, rows: np.ndarray, cols: np.ndarray, scores: np.ndarray
) -> np.ndarray:
    """:func:`match_greedy` on many independent matrices at once, given as flat pair lists.

    One pass over all pairs instead of one call per limb: this is what keeps parsing within its
    time budget.

    Args:
      group: ``(N,)`` int, the matrix (limb) of each candidate pair.
      rows, cols: ``(N,)`` int, the pair's ends; indices are only compared within a group.
      scores: ``(N,)`` pair scores.

    Returns:
      Indices into the ``N`` pairs of the matched ones, by group, then by decreasing score
      (ties keep the input order).
    """
    order = np.lexsort((-np.asarray(scores), group))
    used_rows, used_cols, taken = set(), set(), []
    for i, g, a, b in zip(
        order.tolist(),
        group[order].tolist(),
        rows[order].tolist(),
        cols[order].tolist(),
        strict=True,
    ):
        if (g, a) in used_rows or (g, b) in used_cols:
            continue
        used_rows.add((g, a))
        used_cols.add((g, b))
        taken.append(i)
    return np.asarray(taken, dtype=np.int64)


def match_optimal(scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight matching over the valid pairs (Hungarian algorithm).

    Invalid pairs get weight 0 in a rectangular assignment problem and every pair of weight
    0 or less is dropped from the assignment afterwards. Because all remaining weights are
    positive, a maximum-weight assignment restricted to them is a maximum-weight matching of
    the valid pairs (a matching never gains from a pair of weight <= 0, so valid pairs with a
    non-positive score are never matched).

    Args:
      scores: ``(A, B)`` pair scores.
      valid: ``(A, B)`` bool, pairs that may be matched.

    Returns:
      ``(rows, cols)`` int64 arrays of the matched pairs, by decreasing score.
    """
    weights = np.where(valid, scores, 0.0)
    weights = np.where(weights > 0.0, weights, 0.0)
    positive = weights > 0.0
    if (positive.sum(axis=0) <= 1).all() and (positive.sum(axis=1) <= 1).all():
        # No two positive pairs share an end (the usual case for clean maps): they all are the
        # matching, no need for the Hungarian algorithm.
        rows, cols = np.nonzero(positive)
    else:
        rows, cols = linear_sum_assignment(weights, maximize=True)
        chosen = positive[rows, cols]
        rows, cols = rows[chosen], cols[chosen]
    order = np.argsort(-weights[rows, cols], kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def match_limb(
    scores: np.ndarray, valid: np.ndarray, *, matcher: str = "greedy"
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch to :func:`match_greedy` or :func:`match_optimal` by name."""
    if matcher == "greedy":
        return match_greedy(scores, valid)
    if matcher == "optimal":
        return match_optimal(scores, valid)
    raise ValueError(f"unknown matcher {matcher!r}; expected one of {MATCHERS}")
