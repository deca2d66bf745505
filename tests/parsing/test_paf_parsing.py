"""Bottom-up parsing: peaks, PAF line integral, bipartite matchers, assembly on a cyclic graph."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from posejax import skeleton
from posejax.formulations.paf import confidence_maps, part_affinity_fields
from posejax.parsing.matching import match_greedy, match_limb, match_optimal
from posejax.parsing.paf import (
    assemble_people,
    connection_scores,
    group_people,
    paf_line_integral,
)
from posejax.parsing.peaks import find_peaks


def _gaussian(shape, x, y, sigma=1.0, amplitude=1.0):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return amplitude * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))


def test_peaks_are_exactly_the_planted_ones_with_subpixel_accuracy():
    rng = np.random.default_rng(0)
    heatmaps = np.zeros((40, 48, 3), np.float32)
    planted = {0: [(10.3, 7.8), (30.71, 25.25)], 1: [(5.5, 33.0)], 2: []}
    for k, points in planted.items():
        for x, y in points:
            heatmaps[..., k] = np.maximum(
                heatmaps[..., k], _gaussian(heatmaps.shape[:2], x, y, amplitude=0.8)
            )
    heatmaps[..., 2] = 0.05 * rng.random((40, 48))  # noise below the threshold: no peaks
    peaks = find_peaks(heatmaps, threshold=0.1)
    np.testing.assert_array_equal(peaks.offsets, [0, 2, 3, 3])
    np.testing.assert_array_equal(peaks.part, [0, 0, 1])
    expected = np.array([p for k in range(3) for p in sorted(planted[k], key=lambda q: q[::-1])])
    assert np.abs(peaks.xy - expected).max() < 0.1
    np.testing.assert_allclose(
        peaks.score,
        [
            0.8 * np.exp(-(0.3**2 + 0.2**2) / 2),
            0.8 * np.exp(-(0.29**2 + 0.25**2) / 2),
            0.8 * np.exp(-(0.5**2) / 2),
        ],
        rtol=1e-6,
    )
    # Without refinement: integer pixel centres.
    coarse = find_peaks(heatmaps, threshold=0.1, subpixel=False)
    np.testing.assert_array_equal(coarse.xy, np.round(coarse.xy))
    assert np.abs(coarse.xy - expected).max() <= 0.5


def test_a_peak_between_two_pixel_centres_gives_one_candidate():
    heatmaps = _gaussian((16, 16), 7.5, 4.5)[..., None]  # a 2x2 plateau of equal maxima
    peaks = find_peaks(heatmaps)
    assert peaks.xy.shape == (1, 2)
    np.testing.assert_allclose(peaks.xy[0], [7.5, 4.5], atol=1e-6)


def test_at_most_max_per_part_candidates_are_kept_the_highest():
    rng = np.random.default_rng(1)
    heatmaps = rng.uniform(0.2, 1.0, size=(32, 32, 2)).astype(np.float32)
    everything = find_peaks(heatmaps)
    capped = find_peaks(heatmaps, max_per_part=5)
    np.testing.assert_array_equal(capped.offsets, [0, 5, 10])
    for k in range(2):
        best = np.sort(everything.score[everything.of_part(k)])[-5:]
        np.testing.assert_array_equal(np.sort(capped.score[capped.of_part(k)]), best)
    poses, _ = group_people(heatmaps, np.zeros((32, 32, 1, 2)), limbs=[(0, 1)])
    assert poses.shape[0] == 0


def test_peaks_on_the_border_are_found():
    heatmaps = _gaussian((16, 16), 0.0, 15.0)[..., None]
    np.testing.assert_allclose(find_peaks(heatmaps).xy, [[0.0, 15.0]])


def _band_field(shape, start, end, width=1.0):
    """Unit field along start -> end on pixels within ``width`` of the segment."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    direction = (np.subtract(end, start)) / np.linalg.norm(np.subtract(end, start))
    rel = np.stack([cols - start[0], rows - start[1]], axis=-1)
    along = rel @ direction
    across = np.abs(rel[..., 0] * direction[1] - rel[..., 1] * direction[0])
    length = np.linalg.norm(np.subtract(end, start))
    inside = (along >= -width) & (along <= length + width) & (across <= width)
    return inside[..., None] * direction


def test_line_integral_aligned_perpendicular_and_reversed():
    start, end = np.array([3.2, 4.7]), np.array([20.6, 15.1])
    field = _band_field((24, 24), start, end, width=1.5)  # > sqrt(2): all bilinear corners in
    perpendicular = field[..., ::-1] * [1.0, -1.0]
    assert paf_line_integral(field, start, end) == pytest.approx(1.0, abs=1e-6)
    assert paf_line_integral(perpendicular, start, end) == pytest.approx(0.0, abs=1e-6)
    assert paf_line_integral(field, end, start) == pytest.approx(-1.0, abs=1e-6)
    # Vectorised: several segments at once; one off the band scores about 0.
    starts = np.array([start, end, [3.0, 20.0]])
    ends = np.array([end, start, [10.0, 22.0]])
    np.testing.assert_allclose(paf_line_integral(field, starts, ends), [1, -1, 0], atol=1e-6)


def test_connection_validity_and_distance_prior():
    dots = np.array([[1.0] * 10, [1.0] * 8 + [0.0] * 2, [1.0] * 7 + [0.0] * 3, [0.6] * 10])
    length = np.array([5.0, 5.0, 5.0, 128.0])
    score, valid = connection_scores(dots, length, map_height=64)
    np.testing.assert_allclose(score, [1.0, 0.8, 0.7, 0.6 + (0.5 * 64 / 128 - 1)])
    np.testing.assert_array_equal(valid, [True, True, False, False])
    score, valid = connection_scores(dots, length, map_height=64, distance_prior=False)
    np.testing.assert_array_equal(valid, [True, True, False, True])


def _matching_total(scores, rows, cols):
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    return float(scores[rows, cols].sum())


def _best_total(scores, valid):
    """Brute-force maximum-weight matching over valid pairs (small matrices only)."""
    num_rows, num_cols = scores.shape
    best = 0.0
    for choice in itertools.product(range(-1, num_cols), repeat=num_rows):
        used = [c for c in choice if c >= 0]
        if len(used) != len(set(used)):
            continue
        pairs = [(r, c) for r, c in enumerate(choice) if c >= 0]
        if all(valid[r, c] for r, c in pairs):
            best = max(best, sum(scores[r, c] for r, c in pairs))
    return best


def test_optimal_beats_greedy_where_greedy_is_myopic():
    scores = np.array([[0.9, 0.8], [0.8, 0.1]])
    valid = np.ones_like(scores, bool)
    greedy, optimal = match_greedy(scores, valid), match_optimal(scores, valid)
    assert _matching_total(scores, *greedy) == pytest.approx(1.0)
    assert _matching_total(scores, *optimal) == pytest.approx(1.6)
    np.testing.assert_array_equal(np.stack(greedy), [[0, 1], [0, 1]])
    assert match_limb(scores, valid, matcher="optimal")[0].tolist() == optimal[0].tolist()
    with pytest.raises(ValueError):
        match_limb(scores, valid, matcher="nope")


@pytest.mark.parametrize("matcher", [match_greedy, match_optimal])
def test_invalid_pairs_are_never_matched_rectangular(matcher):
    scores = np.array([[5.0, 1.0, 0.3, 2.0], [0.2, 4.0, 0.9, 0.1]])
    valid = np.array([[False, True, True, False], [True, False, True, True]])
    for s, v in [(scores, valid), (scores.T, valid.T)]:
        rows, cols = matcher(s, v)
        assert v[rows, cols].all() and rows.size == 2
        _matching_total(s, rows, cols)
    rows, cols = matcher(scores, np.zeros_like(valid))
    assert rows.size == cols.size == 0
    rows, cols = matcher(np.zeros((0, 3)), np.zeros((0, 3), bool))
    assert rows.size == cols.size == 0


def test_optimal_matching_is_maximum_weight_on_random_matrices():
    rng = np.random.default_rng(0)
    for _ in range(60):
        shape = tuple(rng.integers(1, 5, size=2))
        scores = rng.uniform(0.01, 1.0, size=shape)
        valid = rng.random(shape) < 0.6
        rows, cols = match_optimal(scores, valid)
        assert valid[rows, cols].all()
        optimal_total = _matching_total(scores, rows, cols)
        assert optimal_total == pytest.approx(_best_total(scores, valid))
        assert optimal_total >= _matching_total(scores, *match_greedy(scores, valid)) - 1e-12


def test_assembly_merges_partial_people_and_accepts_redundant_limbs():
    # One person, candidates 0..16 = parts 0..16 with score 1; legs found before the hips link.
    candidate_scores = [1.0] * 17
    order = [(15, 13), (16, 14), (13, 11), (14, 12), (11, 12)]
    connections = [(a, b, a, b, 0.5) for a, b in order]
    members, scores = assemble_people(connections, candidate_scores, num_parts=17, min_parts=3)
    assert members.shape == (1, 17)
    assert sorted(members[0][members[0] >= 0].tolist()) == [11, 12, 13, 14, 15, 16]
    np.testing.assert_allclose(scores, [(6 + 5 * 0.5) / 6])

    # The whole skeleton in COCO order: partial people are created, then joined; the redundant
    # limbs of the cycles (shoulders-hips, eyes-nose, ears-shoulders) only add their scores.
    connections = [(a, b, a, b, 0.5) for a, b in skeleton.COCO_LIMBS]
    members, scores = assemble_people(connections, candidate_scores, num_parts=17)
    np.testing.assert_array_equal(members, [np.arange(17)])
    np.testing.assert_allclose(scores, [(17 + 19 * 0.5) / 17])


def test_assembly_keeps_the_first_on_conflicts_and_prunes():
    # Candidates: 0 = part 5 (A), 1 = part 7 (A), 2 = part 5 (B), 3 = part 7 (B), 4 = part 9 (B),
    # 5 = part 9 (stray).
    candidate_scores = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    connections = [
        (5, 7, 0, 1, 1.0),  # person A: 5-7
        (5, 7, 2, 3, 1.0),  # person B: 5-7
        (7, 9, 3, 4, 1.0),  # person B: 7-9
        (7, 9, 1, 4, 0.9),  # A's elbow to B's wrist: A and B both have parts 5 and 7 -> dropped
        (6, 5, 99, 0, 0.9),  # part 6 candidate 99 joins A
        (7, 9, 1, 5, 0.8),  # stray wrist 5 joins A (slot free)
    ]
    members, scores = assemble_people(
        connections, candidate_scores + [0.0] * 94, num_parts=17, min_parts=3
    )
    assert len(members) == 2
    by_first = {tuple(m[[5, 6, 7, 9]]) for m in members}
    assert by_first == {(0, 99, 1, 5), (2, -1, 3, 4)}
    members, _ = assemble_people(connections, [1.0] * 100, num_parts=17, min_parts=4)
    assert len(members) == 1  # person B has three parts only
    members, _ = assemble_people(
        connections, [1.0] * 100, num_parts=17, min_parts=1, min_person_score=1.67
    )
    # A: (4 parts + 2.7) / 4 = 1.675 is kept; B: (3 parts + 2) / 3 = 1.667 is not.
    assert members.tolist() == [[-1] * 5 + [0, 99, 1, -1, 5] + [-1] * 7]


def _maps_of(people, size=64, limbs=skeleton.COCO_LIMBS):
    keypoints = np.asarray(people, np.float32)
    present = keypoints[..., 2] > 0
    heatmaps = np.asarray(confidence_maps(keypoints[..., :2], present, (size, size), 1.0))
    pafs = np.asarray(
        part_affinity_fields(keypoints[..., :2], present, tuple(limbs), (size, size), 1.0, 1.0)
    )
    return heatmaps, pafs


def _person(x0, y0, scale=30.0):
    template = np.array(
        [
            [0, 0],
            [1, -1],
            [-1, -1],
            [2, 0],
            [-2, 0],
            [3, 4],
            [-3, 4],
            [4, 8],
            [-4, 8],
            [4, 12],
            [-4, 12],
            [2, 13],
            [-2, 13],
            [2, 18],
            [-2, 18],
            [2, 23],
            [-2, 23],
        ],
        np.float32,
    ) * (scale / 25.0)
    xy = template + [x0, y0]
    return np.concatenate([xy, np.full((17, 1), 2.0, np.float32)], axis=1)


@pytest.mark.parametrize("matcher", ["greedy", "optimal"])
def test_group_people_recovers_side_by_side_people(matcher):
    people = [_person(15.0, 10.0), _person(30.0, 14.0), _person(47.0, 9.0)]
    heatmaps, pafs = _maps_of(people)
    poses, scores = group_people(heatmaps, pafs, limbs=skeleton.COCO_LIMBS, matcher=matcher)
    assert poses.shape == (3, 17, 3) and scores.shape == (3,)
    assert (poses[..., 2] > 0).all()
    found = sorted(poses[..., :2].tolist(), key=lambda p: p[0][0])
    np.testing.assert_allclose(found, np.asarray(people)[..., :2], atol=0.05)
    assert np.all(np.diff(scores) <= 0)


def test_group_people_on_empty_maps_and_bad_limbs():
    poses, scores = group_people(np.zeros((8, 8, 17)), np.zeros((8, 8, 19, 2)))
    assert poses.shape == (0, 17, 3) and scores.shape == (0,)
    with pytest.raises(ValueError, match="limbs"):
        group_people(np.zeros((8, 8, 17)), np.zeros((8, 8, 18, 2)))
