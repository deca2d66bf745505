"""Bottom-up multi-person parsing with Part Affinity Fields.

Pipeline of :func:`group_people` on one image (all NumPy, vectorised over pixels and pairs):

1. part candidates: local maxima of each confidence map (:func:`posejax.parsing.peaks.find_peaks`);
2. limb scores: for every limb, every (candidate of part A, candidate of part B) pair is scored by
   the line integral of the limb's PAF along the segment between them (Eq. 10), all pairs of all
   limbs in one vectorised lookup (:func:`limb_sample_dots`, :func:`connection_scores`);
3. per-limb bipartite matching, greedy or optimal (:mod:`posejax.parsing.matching`);
4. assembly of the matched connections into people (:func:`assemble_people`).

Shape legend: ``H, W`` map size, ``K`` parts, ``L`` limbs, ``N`` candidate pairs, ``S`` samples
per segment, ``P`` people. Positions are map pixels with the pixel-centre convention of
``posejax.geometry`` (pixel ``(r, c)`` has its centre at ``(x, y) = (c, r)``).

References:
  Cao et al., "Realtime Multi-Person 2D Pose Estimation using Part Affinity Fields", CVPR 2017,
  Sec. 2.3-2.4 (Eq. 10-13). The validity rule and the distance prior of :func:`connection_scores`
  and the person score/pruning of :func:`assemble_people` follow the authors' reference
  implementation (CMU OpenPose), re-implemented here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence

import numpy as np

from posejax import skeleton
from posejax.parsing import ilp
from posejax.parsing.matching import MATCHERS, match_greedy_grouped, match_optimal
from posejax.parsing.peaks import find_peaks

logger = logging.getLogger(__name__)

GROUPINGS = (*MATCHERS, "ilp")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParsingConfig:
    """Every setting of :func:`group_people`, with its one default.

    ``conf/formulation/paf.yaml`` lists the same values under ``parsing:`` so that Hydra can
    override them (``formulation.parsing.matcher=ilp``); a test keeps the two equal.

    Attributes:
      matcher: ``"greedy"`` (OpenPose), ``"optimal"`` (Hungarian, per limb) or ``"ilp"`` (one
        integer program for the whole image, :mod:`posejax.parsing.ilp`).
      peak_threshold: minimum confidence of a part candidate (OpenPose ``thre1``).
      subpixel: refine peak positions (see :func:`posejax.parsing.peaks.find_peaks`).
      max_candidates: keep at most this many candidates per part, the highest (None: all); a
        guard against the noise peaks of untrained networks (cost grows with its square).
      num_samples: samples along each candidate segment for the line integral (Eq. 10).
      sample_threshold: minimum PAF . d of a supporting sample (OpenPose ``thre2``).
      min_positive_fraction: minimum fraction of supporting samples of a valid connection.
      distance_prior: penalise connections longer than ``H / 2`` (see :func:`connection_scores`).
      min_parts: minimum number of parts of a person.
      min_person_score: minimum person score (see :func:`assemble_people`).
      ilp_graph: ``"limbs"`` (the field's limb graph, cycles included) or ``"dense"`` (plus
        derived pairs of parts two limbs apart, :func:`posejax.parsing.ilp.dense_pairs`).
      ilp_max_variables: size limit of the program (candidate pairs); beyond it
        :class:`posejax.parsing.ilp.GroupingTooLarge` is raised, unless ``ilp_fallback``.
      ilp_time_limit: seconds per image for the whole solve.
      ilp_fallback: ``None`` (raise) or ``"greedy"``: parse greedily when the program is too
        large or the solver fails, with a logged warning and the reason in the returned info.
    """

    matcher: str = "greedy"
    peak_threshold: float = 0.1
    subpixel: bool = True
    max_candidates: int | None = 32
    num_samples: int = 10
    sample_threshold: float = 0.05
    min_positive_fraction: float = 0.8
    distance_prior: bool = True
    min_parts: int = 3
    min_person_score: float = 0.4
    ilp_graph: str = "limbs"
    ilp_max_variables: int = 4000
    ilp_time_limit: float = 10.0
    ilp_fallback: str | None = None

    def __post_init__(self):
        if self.matcher not in GROUPINGS:
            raise ValueError(f"matcher must be one of {GROUPINGS}, got {self.matcher!r}")
        if self.ilp_graph not in ilp.GRAPHS:
            raise ValueError(f"ilp_graph must be one of {ilp.GRAPHS}, got {self.ilp_graph!r}")
        if self.ilp_fallback not in (None, "greedy"):
            raise ValueError(f"ilp_fallback must be null or 'greedy', got {self.ilp_fallback!r}")
        if self.ilp_max_variables < 0 or self.ilp_time_limit <= 0:
            raise ValueError(
                "ilp_max_variables must be >= 0 and ilp_time_limit > 0, got "
                f"{self.ilp_max_variables} and {self.ilp_time_limit}"
            )


def limb_sample_dots(
    pafs: np.ndarray,
    limb: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    *,
    num_samples: int = 10,
    sample_index: np.ndarray | None = None,
) -> np.ndarray:
    """PAF . unit direction at ``num_samples`` points spaced uniformly along each segment.

    The samples include both endpoints (``u = 0`` and ``u = 1``); the field is read with
    bilinear interpolation, positions outside the map are clamped to its border.

    Args:
      pafs: ``(H, W, L, 2)`` fields, ``(x, y)`` component last.
      limb: ``(N,)`` int, which limb's field each segment is read from.
      start: ``(N, 2)`` segment starts ``(x, y)`` in map pixels (candidate of the limb's part A).
      end: ``(N, 2)`` segment ends (candidate of part B).
      num_samples: ``S``.
      sample_index: compute only these of the ``S`` samples (default: all).

    Returns:
      ``(N, S)`` (or ``(N, len(sample_index))``) float64 dot products ``PAF(p(u)) . d``
      with ``d`` the unit vector start -> end
      (all 0 for a zero-length segment).
    """
    pafs = np.asarray(pafs)
    height, width, num_limbs, _ = pafs.shape
    start = np.asarray(start, dtype=np.float64).reshape(-1, 2)
    end = np.asarray(end, dtype=np.float64).reshape(-1, 2)
    limb = np.asarray(limb, dtype=np.int64).reshape(-1)
    delta = end - start
    length = np.hypot(delta[:, 0], delta[:, 1])
    direction = delta / np.maximum(length, 1e-12)[:, None]
    direction[length <= 1e-12] = 0.0

    u = np.linspace(0.0, 1.0, num_samples)
    if sample_index is not None:
        u = u[np.asarray(sample_index)]
    x = np.clip(start[:, None, 0] + u * delta[:, None, 0], 0.0, width - 1)
    y = np.clip(start[:, None, 1] + u * delta[:, None, 1], 0.0, height - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(width - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(height - 2, 0))
    fx, fy = x - x0, y - y0
    dx = 1 if width > 1 else 0
    dy = 1 if height > 1 else 0

    # One gather per corner on the flattened field, with (x, y) read as one complex64: a 1D
    # `take` is ~10x faster than gathering rows of two floats.
    flat = np.ascontiguousarray(pafs, dtype=np.float32).reshape(-1, 2).view(np.complex64)[:, 0]
    base = (y0 * width + x0) * num_limbs + limb[:, None]
    right, down = dx * num_limbs, dy * width * num_limbs
    field = (
        flat.take(base) * ((1.0 - fx) * (1.0 - fy))
        + flat.take(base + right) * (fx * (1.0 - fy))
        + flat.take(base + down) * ((1.0 - fx) * fy)
        + flat.take(base + down + right) * (fx * fy)
    )
    return field.real * direction[:, None, 0] + field.imag * direction[:, None, 1]


def paf_line_integral(
    paf: np.ndarray, start: np.ndarray, end: np.ndarray, *, num_samples: int = 10
) -> np.ndarray:
    """Line integral of one limb's PAF along segments, normalised by their length (Eq. 10).

    ``E = integral_0^1 PAF(p(u)) . d du``, approximated by the mean over ``num_samples`` uniform
    samples: about 1 for a unit field along the segment, 0 for a perpendicular one, -1 for a
    reversed one.

    Args:
      paf: ``(H, W, 2)`` one limb's field.
      start: ``(N, 2)`` or ``(2,)`` segment starts ``(x, y)`` in map pixels.
      end: same shape as ``start``, segment ends.
      num_samples: ``S``.

    Returns:
      ``(N,)`` (or a scalar for ``(2,)`` inputs) float64 scores.
    """
    start = np.asarray(start, dtype=np.float64)
    dots = limb_sample_dots(
        np.asarray(paf)[:, :, None, :],
        np.zeros(start.reshape(-1, 2).shape[0], dtype=np.int64),
        start,
        end,
        num_samples=num_samples,
    )
    return dots.mean(axis=-1).reshape(start.shape[:-1])


def connection_scores(
    dots: np.ndarray,
    length: np.ndarray,
    *,
    map_height: int,
    sample_threshold: float = 0.05,
    min_positive_fraction: float = 0.8,
    distance_prior: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Connection score and validity of candidate pairs from their sampled PAF dot products.

    ``score = mean(dots) + prior`` where the optional distance prior
    ``min(0.5 * map_height / length - 1, 0)`` (as in the OpenPose reference) penalises segments
    longer than half the map height. A pair is valid when at least ``min_positive_fraction`` of
    its samples have a dot product above ``sample_threshold`` and ``score > 0``.

    Args:
      dots: ``(N, S)`` from :func:`limb_sample_dots`.
      length: ``(N,)`` segment lengths in map pixels.
      map_height: ``H``, the scale of the distance prior.
      sample_threshold: minimum dot product of a "supporting" sample (OpenPose's ``thre2``).
      min_positive_fraction: minimum fraction of supporting samples.
      distance_prior: whether to add the distance prior.

    Returns:
      ``(score, valid)``, ``(N,)`` float64 and bool.
    """
    score = dots.mean(axis=-1)
    if distance_prior:
        ratio = np.divide(
            0.5 * map_height, length, out=np.full_like(score, np.inf), where=length > 0
        )
        score = score + np.minimum(ratio - 1.0, 0.0)
    supported = (dots > sample_threshold).mean(axis=-1) >= min_positive_fraction
    return score, supported & (score > 0.0)


def assemble_people(
    connections: Iterable[tuple[int, int, int, int, float]],
    candidate_scores: Sequence[float],
    *,
    num_parts: int,
    min_parts: int = 3,
    min_person_score: float = 0.4,
) -> tuple[np.ndarray, np.ndarray]:
    """Group matched limb connections into people, merging partial people along the way.

    Connections are processed in the order given. For a connection between candidate ``a`` (of
    part ``part_a``) and ``b`` (of ``part_b``), with ``owner`` the person holding a candidate:

    * neither owned: a new person ``{a, b}``;
    * one owned: the other joins that person if its part slot is free, else the connection is
      dropped (the first assignment wins);
    * both in the same person (a redundant limb closing a cycle of the skeleton: shoulders-hips,
      eyes-nose, ears-shoulders): only the connection score is added;
    * in two different people: they are merged if their filled part slots are disjoint, else the
      connection is dropped.

    Because of the merge rule the result does not depend on the skeleton being a tree or on the
    limb order building each person from one end: partial people found separately (e.g. both
    legs before the hips connection) are joined as soon as one connection links them.

    Person score, as in the OpenPose reference: ``(sum of part scores + sum of connection
    scores) / number of parts``. People with fewer than ``min_parts`` parts or a score below
    ``min_person_score`` are pruned.

    Args:
      connections: ``(part_a, part_b, a, b, score)`` with ``a, b`` candidate indices.
      candidate_scores: ``(N,)`` peak score of each candidate.
      num_parts: ``K``.
      min_parts: minimum number of parts of a kept person.
      min_person_score: minimum person score of a kept person.

    Returns:
      ``(members, scores)``: ``(P, K)`` int64 candidate index per part (-1 where missing) and
      ``(P,)`` float64 person scores, by decreasing score.
    """
    owner: dict[int, int] = {}
    members: list[list[int]] = []
    filled: list[int] = []  # bit k set: the person holds a candidate of part k
    totals: list[float] = []
    alive: list[bool] = []
    for part_a, part_b, a, b, score in connections:
        pa, pb = owner.get(a, -1), owner.get(b, -1)
        if pa == -1 and pb == -1:
            person = [-1] * num_parts
            person[part_a], person[part_b] = a, b
            owner[a] = owner[b] = len(members)
            members.append(person)
            filled.append((1 << part_a) | (1 << part_b))
            totals.append(candidate_scores[a] + candidate_scores[b] + score)
            alive.append(True)
        elif pa == pb:
            totals[pa] += score
        elif pb == -1:
            if members[pa][part_b] == -1:
                members[pa][part_b] = b
                filled[pa] |= 1 << part_b
                owner[b] = pa
                totals[pa] += candidate_scores[b] + score
        elif pa == -1:
            if members[pb][part_a] == -1:
                members[pb][part_a] = a
                filled[pb] |= 1 << part_a
                owner[a] = pb
                totals[pb] += candidate_scores[a] + score
        elif not filled[pa] & filled[pb]:  # two people with disjoint parts: merge
            keep, gone = members[pa], members[pb]
            for k, c in enumerate(gone):
                if c != -1:
                    keep[k] = c
                    owner[c] = pa
            filled[pa] |= filled[pb]
            totals[pa] += totals[pb] + score
            alive[pb] = False

    kept_members, kept_scores = [], []
    for person, total, is_alive in zip(members, totals, alive, strict=True):
        count = num_parts - person.count(-1)
        if not is_alive or count < min_parts or total / count < min_person_score:
            continue
        kept_members.append(person)
        kept_scores.append(total / count)
    if not kept_members:
        return np.zeros((0, num_parts), dtype=np.int64), np.zeros(0, dtype=np.float64)
    scores = np.asarray(kept_scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return np.asarray(kept_members, dtype=np.int64)[order], scores[order]


def group_people(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    *,
    limbs: Sequence[tuple[int, int]] = skeleton.COCO_LIMBS,
    config: ParsingConfig | None = None,
    return_info: bool = False,
    **settings,
):
    """Detect the people of one image from its confidence maps and part affinity fields.

    Args:
      heatmaps: ``(H, W, K)`` part confidence maps.
      pafs: ``(H, W, L, 2)`` part affinity fields, ``(x, y)`` last, limbs in ``limbs`` order; the
        field of limb ``(A, B)`` points from part A to part B.
      limbs: ``L`` pairs ``(A, B)`` of part indices; may contain cycles.
      config: parsing settings (:class:`ParsingConfig`; its defaults when None).
      return_info: also return a :class:`posejax.parsing.ilp.GroupingInfo` (method, solver
        status, optimality gap, program size, time).
      **settings: fields of :class:`ParsingConfig` overriding ``config``'s (e.g.
        ``matcher="ilp"``).

    Returns:
      ``(poses, scores)`` (and ``info`` with ``return_info``): ``(P, K, 3)`` float64
      ``(x, y, score)`` in map pixels, score being the part's peak value and ``(0, 0, 0)`` for
      parts not found; ``(P,)`` person scores, by decreasing score.
    """
    config = dataclasses.replace(config or ParsingConfig(), **settings)
    start_time = time.perf_counter()
    poses, scores, info = _group(np.asarray(heatmaps), np.asarray(pafs), limbs, config)
    info.seconds = time.perf_counter() - start_time
    return (poses, scores, info) if return_info else (poses, scores)


def _group(heatmaps, pafs, limbs, config: ParsingConfig):
    num_parts = heatmaps.shape[-1]
    if pafs.shape[2] != len(limbs):
        raise ValueError(f"pafs have {pafs.shape[2]} limbs but {len(limbs)} limbs were given")
    candidates = find_peaks(
        heatmaps,
        threshold=config.peak_threshold,
        subpixel=config.subpixel,
        max_per_part=config.max_candidates,
    )
    info = ilp.GroupingInfo(config.matcher, "optimal" if config.matcher == "ilp" else "heuristic")

    # Every (A, B) candidate pair of every limb, limb-major then row-major, built without a
    # loop so that one lookup scores them all.
    limb_parts = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
    first = candidates.offsets[limb_parts]  # (L, 2) first candidate of parts A and B
    count = candidates.offsets[limb_parts + 1] - first  # (L, 2)
    sizes = count[:, 0] * count[:, 1]
    if sizes.sum() == 0:
        return np.zeros((0, num_parts, 3)), np.zeros(0), info
    pair_limb = np.repeat(np.arange(len(limb_parts)), sizes)
    local = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    row, col = np.divmod(local, count[pair_limb, 1])
    pair_a, pair_b = first[pair_limb, 0] + row, first[pair_limb, 1] + col
    score, valid = _score_pairs(
        pafs, candidates.xy, pair_limb, pair_a, pair_b, heatmaps.shape[0], config
    )

    # Connections (part_a, part_b, a, b, score) for the assembly, by decreasing score.
    matcher = config.matcher
    connections = None
    if matcher == "ilp":
        try:
            connections, info = _ilp_connections(
                candidates, limb_parts, pair_limb, pair_a, pair_b, score, valid, config
            )
        except (ilp.GroupingTooLarge, ilp.GroupingFailed) as err:
            if config.ilp_fallback != "greedy":
                raise
            logger.warning("ILP grouping falls back to greedy matching: %s", err)
            info = ilp.GroupingInfo("greedy", f"fallback: {err}", gap=float("nan"))
            matcher = "greedy"
    if connections is None:
        if matcher == "greedy":
            chosen = np.flatnonzero(valid)
            chosen = chosen[
                match_greedy_grouped(pair_limb[chosen], row[chosen], col[chosen], score[chosen])
            ]
        else:
            blocks = []
            ends = np.cumsum(sizes)
            for limb in np.unique(pair_limb[valid]).tolist():
                block = slice(ends[limb] - sizes[limb], ends[limb])
                shape = tuple(count[limb])
                rows, cols = match_optimal(score[block].reshape(shape), valid[block].reshape(shape))
                blocks.append(block.start + rows * shape[1] + cols)
            chosen = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
        # Assembly visits the matched connections of all limbs by decreasing score (not limb by
        # limb): a confident connection is never blocked by a weaker one of an earlier limb that
        # took its part slot first (+0.8 oracle AP on synthetic crowds, see E1's README).
        chosen = chosen[np.argsort(-score[chosen], kind="stable")]
        connections = list(
            zip(
                limb_parts[pair_limb[chosen], 0].tolist(),
                limb_parts[pair_limb[chosen], 1].tolist(),
                pair_a[chosen].tolist(),
                pair_b[chosen].tolist(),
                score[chosen].tolist(),
                strict=True,
            )
        )

    members, scores = assemble_people(
        connections,
        candidates.score.tolist(),
        num_parts=num_parts,
        min_parts=config.min_parts,
        min_person_score=config.min_person_score,
    )
    poses = np.zeros((members.shape[0], num_parts, 3))
    found = members >= 0
    poses[found, :2] = candidates.xy[members[found]]
    poses[found, 2] = candidates.score[members[found]]
    return poses, scores, info


def _score_pairs(pafs, xy, pair_limb, pair_a, pair_b, map_height: int, config: ParsingConfig):
    """:func:`connection_scores` of every candidate pair, exactly, at a fraction of the cost.

    Most pairs join candidates of different people and have no field along their segment. A
    pair is valid only if at most ``S - required`` of its ``S`` samples fail the sample
    threshold, so three probe samples are read for every pair first, and the pairs whose
    probes already fail more often than that are invalid without reading the rest (the other
    pairs get all ``S`` samples; scores and validity are identical to scoring every pair in
    full).
    """
    start, end = xy[pair_a], xy[pair_b]
    length = np.hypot(*(end - start).T)
    samples = config.num_samples
    # The mean of booleans, as connection_scores computes it, for every possible count.
    required = int(np.argmax(np.arange(samples + 1) / samples >= config.min_positive_fraction))
    allowed_failures = samples - required
    score = np.full(pair_a.size, -np.inf)
    valid = np.zeros(pair_a.size, bool)
    # Interior samples: near the ends a wrong pair still reads its own candidates' fields.
    probe = np.unique(np.linspace(0, samples - 1, 5)[1:-1].round().astype(np.int64))
    kept = np.arange(pair_a.size)  # the pairs scored in full
    if config.min_positive_fraction <= 1.0 and probe.size > allowed_failures:
        dots = limb_sample_dots(
            pafs, pair_limb, start, end, num_samples=samples, sample_index=probe
        )
        kept = np.flatnonzero((dots <= config.sample_threshold).sum(-1) <= allowed_failures)
    dots = limb_sample_dots(
        pafs,
        pair_limb[kept],
        start[kept],
        end[kept],
        num_samples=samples,
    )
    score[kept], valid[kept] = connection_scores(
        dots,
        length[kept],
        map_height=map_height,
        sample_threshold=config.sample_threshold,
        min_positive_fraction=config.min_positive_fraction,
        distance_prior=config.distance_prior,
    )
    return score, valid


def _ilp_connections(candidates, limb_parts, pair_limb, pair_a, pair_b, score, valid, config):
    """The connections of the ILP's partition, in the input layout of :func:`assemble_people`.

    With an optimal solution they form a valid partition, so the assembly (which only merges
    and joins) rebuilds exactly its components; a time-limited solution is repaired by the
    assembly's rules. Derived pairs of the dense graph join people but add no connection
    score (they carry no measurement of their own), so person scores stay comparable across
    matchers.
    """
    keep = np.flatnonzero(valid)
    a, b = pair_a[keep], pair_b[keep]
    kind, weight = pair_limb[keep], score[keep]
    part = np.repeat(np.arange(len(candidates.offsets) - 1), np.diff(candidates.offsets))
    types = [tuple(p) for p in limb_parts.tolist()]
    if config.ilp_graph == "dense":
        a, b, kind, weight, types = ilp.dense_pairs(a, b, kind, weight, part, types)
    chosen, info = ilp.solve_grouping(
        a,
        b,
        kind,
        weight,
        part,
        num_types=len(types),
        max_variables=config.ilp_max_variables,
        time_limit=config.ilp_time_limit,
    )
    picked = np.flatnonzero(chosen)
    picked = picked[np.argsort(-weight[picked], kind="stable")]
    derived = kind[picked] >= len(limb_parts)
    return (
        list(
            zip(
                part[a[picked]].tolist(),
                part[b[picked]].tolist(),
                a[picked].tolist(),
                b[picked].tolist(),
                np.where(derived, 0.0, weight[picked]).tolist(),
                strict=True,
            )
        ),
        info,
    )
