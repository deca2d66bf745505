"""ILP grouping (posejax.parsing.ilp): the global program where per-limb matching fails, its size
limit, its solver-failure handling and the dense graph."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from posejax.parsing import ilp
from posejax.parsing.matching import match_greedy_grouped, match_optimal
from posejax.parsing.paf import ParsingConfig, assemble_people, group_people

NOSE, LEYE, REYE = 0, 1, 2
# The limits group_people passes by default.
LIMITS = {
    "max_variables": ParsingConfig().ilp_max_variables,
    "time_limit": ParsingConfig().ilp_time_limit,
}
FACE_LIMBS = [(NOSE, LEYE), (NOSE, REYE), (LEYE, REYE)]


def _triangle_scene():
    """Two faces: candidates n1, n2 (noses), l1, l2 (left eyes), r1, r2 (right eyes).

    The true people are {n1, l1, r1} and {n2, l2, r2}: every true pair scores 0.9 except the
    nose-left eye pairs (0.4 each), and one wrong pair n1-l2 scores 0.95, the best of all.
    Greedy per-limb matching (and the Hungarian optimum of the nose-left eye limb alone, 0.95 >
    0.4 + 0.4) take n1-l2; the assembly then cannot attach l1, and the person of n1 is wrong.
    The global optimum (total 4.4 against 2.75 for the best partition holding n1-l2) is the
    truth.
    """
    n1, n2, l1, l2, r1, r2 = range(6)
    part = np.array([NOSE, NOSE, LEYE, LEYE, REYE, REYE])
    pairs = [  # (a, b, limb type, score)
        (n1, l1, 0, 0.4),
        (n2, l2, 0, 0.4),
        (n1, l2, 0, 0.95),
        (n1, r1, 1, 0.9),
        (n2, r2, 1, 0.9),
        (l1, r1, 2, 0.9),
        (l2, r2, 2, 0.9),
    ]
    a, b, kind, weight = (np.array(c) for c in zip(*pairs, strict=True))
    truth = {frozenset({n1, l1, r1}), frozenset({n2, l2, r2})}
    return part, a.astype(np.int64), b.astype(np.int64), kind.astype(np.int64), weight, truth


def _people(connections, num_candidates):
    members, _ = assemble_people(
        connections, [1.0] * num_candidates, num_parts=3, min_parts=1, min_person_score=0.0
    )
    return {frozenset(int(c) for c in person if c >= 0) for person in members}


def _connections(part, a, b, weight, chosen):
    order = chosen[np.argsort(-weight[chosen], kind="stable")]
    return [(part[a[i]], part[b[i]], a[i], b[i], weight[i]) for i in order]


def test_global_program_recovers_people_that_per_limb_matching_mis_assembles():
    part, a, b, kind, weight, truth = _triangle_scene()
    # Greedy per-limb matching (as group_people runs it): the wrong pair wins its limb.
    greedy = match_greedy_grouped(kind, a, b, weight)
    greedy_people = _people(_connections(part, a, b, weight, greedy), 6)
    assert frozenset({0, 3, 4}) in greedy_people and greedy_people != truth
    # The Hungarian optimum of the nose-left eye limb alone also takes it.
    scores = np.zeros((2, 2))
    scores[a[kind == 0], b[kind == 0] - 2] = weight[kind == 0]
    rows, cols = match_optimal(scores, scores > 0)
    assert (rows.tolist(), cols.tolist()) == ([0], [1])
    # The global program does not.
    chosen, info = ilp.solve_grouping(a, b, kind, weight, part, num_types=3, **LIMITS)
    assert info.status == "optimal" and info.method == "ilp" and info.gap <= 1e-6
    assert _people(_connections(part, a, b, weight, np.flatnonzero(chosen)), 6) == truth
    assert weight[chosen].sum() == pytest.approx(4.4)


def test_lazy_rows_keep_one_candidate_of_each_part_per_person():
    """A 4-cycle shoulders-hips where the best-scoring edges chain two left shoulders into one
    component: only the lazily added path row forbids it."""
    lsh, rsh, rhip, lhip = 5, 6, 12, 11
    types = [(lsh, rsh), (rsh, rhip), (rhip, lhip), (lsh, lhip)]
    part = np.array([lsh, lsh, rsh, rhip, lhip])  # two left shoulders: 0 and 1
    a = np.array([0, 2, 3, 4])
    b = np.array([2, 3, 4, 1])
    kind = np.arange(4)
    weight = np.array([0.9, 0.9, 0.9, 0.8])
    chosen, info = ilp.solve_grouping(a, b, kind, weight, part, num_types=len(types), **LIMITS)
    assert info.status == "optimal" and info.rounds >= 2  # the first solve chains them
    assert not ilp.conflict_paths(chosen, a, b, part)
    assert chosen.sum() == 3 and not chosen[3]  # the weakest edge of the path is cut


def test_triangle_rows_make_the_partition_transitive():
    part, a, b, kind, weight, _ = _triangle_scene()
    rows = ilp._triangle_rows(a, b)
    # Candidate triangles (n1, l1, r1) and (n2, l2, r2): three rows each.
    assert len(rows) == 6
    for trio, signs in rows:
        assert sorted(signs.tolist()) == [-1.0, 1.0, 1.0]
        assert len({frozenset((a[e], b[e])) for e in trio}) == 3


def test_size_limit_is_exact_and_explained():
    part, a, b, kind, weight, _ = _triangle_scene()
    chosen, info = ilp.solve_grouping(
        a, b, kind, weight, part, num_types=3, max_variables=7, time_limit=LIMITS["time_limit"]
    )
    assert info.variables == 7 and info.status == "optimal"
    with pytest.raises(ilp.GroupingTooLarge, match="7 candidate pairs exceed .*=6"):
        ilp.solve_grouping(
            a, b, kind, weight, part, num_types=3, max_variables=6, time_limit=LIMITS["time_limit"]
        )


def _two_people_maps():
    """Perfect maps of two separated 3-part faces (nose, eyes) on a 32x32 grid."""
    from posejax.formulations.paf import confidence_maps, part_affinity_fields

    people = np.zeros((2, 17, 2), np.float32)
    people[:, :3] = [[[8, 10], [6, 8], [10, 8]], [[24, 22], [22, 20], [26, 20]]]
    present = np.zeros((2, 17), bool)
    present[:, :3] = True
    heatmaps = np.asarray(confidence_maps(people, present, (32, 32), 1.0))
    pafs = np.asarray(part_affinity_fields(people, present, FACE_LIMBS, (32, 32), 1.0, 1.0))
    return heatmaps, pafs


def test_group_people_with_ilp_finds_both_faces_and_reports_the_solve():
    heatmaps, pafs = _two_people_maps()
    config = ParsingConfig(matcher="ilp", min_parts=3)
    poses, scores, info = group_people(
        heatmaps, pafs, limbs=FACE_LIMBS, config=config, return_info=True
    )
    greedy, _ = group_people(heatmaps, pafs, limbs=FACE_LIMBS, min_parts=3)
    assert len(poses) == 2 and info.method == "ilp" and info.status == "optimal"
    assert info.variables >= 6 and info.seconds > 0
    np.testing.assert_allclose(np.sort(poses[:, 0, 0]), np.sort(greedy[:, 0, 0]))
    dense = group_people(heatmaps, pafs, limbs=FACE_LIMBS, config=config, ilp_graph="dense")
    assert len(dense[0]) == 2  # a triangle graph has no derived pairs: same answer


def test_too_large_program_raises_or_falls_back_with_a_logged_reason(caplog):
    heatmaps, pafs = _two_people_maps()
    with pytest.raises(ilp.GroupingTooLarge, match="ilp_max_variables=1"):
        group_people(heatmaps, pafs, limbs=FACE_LIMBS, matcher="ilp", ilp_max_variables=1)
    with caplog.at_level(logging.WARNING, logger="posejax.parsing.paf"):
        poses, _, info = group_people(
            heatmaps,
            pafs,
            limbs=FACE_LIMBS,
            matcher="ilp",
            ilp_max_variables=1,
            ilp_fallback="greedy",
            return_info=True,
        )
    assert len(poses) == 2
    assert info.method == "greedy" and info.status.startswith("fallback: ILP grouping")
    assert "falls back to greedy" in caplog.text


def test_solver_failure_is_an_error_or_a_logged_fallback(monkeypatch):
    class NoSolution:
        x, status, message = None, 4, "numerical trouble"

    monkeypatch.setattr(ilp, "milp", lambda *args, **kwargs: NoSolution())
    heatmaps, pafs = _two_people_maps()
    with pytest.raises(ilp.GroupingFailed, match="status 4: numerical trouble"):
        group_people(heatmaps, pafs, limbs=FACE_LIMBS, matcher="ilp")
    poses, _, info = group_people(
        heatmaps, pafs, limbs=FACE_LIMBS, matcher="ilp", ilp_fallback="greedy", return_info=True
    )
    assert len(poses) == 2 and "no solution" in info.status


def test_time_limit_returns_a_repaired_valid_partition(monkeypatch):
    """A solve stopped by its time limit (status 1) with a solution that joins two left
    shoulders: the status says so and the assembly still returns valid people."""
    part = np.array([5, 5, 6, 12, 11])
    a, b = np.array([0, 2, 3, 4]), np.array([2, 3, 4, 1])

    class Stopped:
        x, status, message, mip_gap = np.ones(4), 1, "time limit reached", 0.3

    monkeypatch.setattr(ilp, "milp", lambda *args, **kwargs: Stopped())
    chosen, info = ilp.solve_grouping(
        a, b, np.arange(4), np.array([0.9, 0.9, 0.9, 0.8]), part, num_types=4, **LIMITS
    )
    assert info.status == "time_limit" and info.gap == pytest.approx(0.3)
    assert ilp.conflict_paths(chosen, a, b, part)  # the raw solution is not a partition...
    connections = _connections(part, a, b, np.array([0.9, 0.9, 0.9, 0.8]), np.flatnonzero(chosen))
    members, _ = assemble_people(connections, [1.0] * 5, num_parts=17, min_parts=1)
    assert all(len(set(p[p >= 0].tolist())) == (p >= 0).sum() for p in members)
    assert sum((p >= 0).sum() for p in members) == 4  # ...the repair drops one shoulder


def test_dense_pairs_chain_two_limbs_through_the_middle_part():
    # Arm: shoulder 5 - elbow 7 - wrist 9; two people.
    part = np.array([5, 5, 7, 7, 9, 9])
    a = np.array([0, 1, 2, 3])
    b = np.array([2, 3, 4, 5])
    kind = np.array([0, 0, 1, 1])
    weight = np.array([0.9, 0.5, 0.7, 0.8])
    a2, b2, kind2, w2, types = ilp.dense_pairs(a, b, kind, weight, part, [(5, 7), (7, 9)])
    assert types == [(5, 7), (7, 9), (5, 9)]
    derived = kind2 == 2
    assert sorted(zip(a2[derived].tolist(), b2[derived].tolist(), strict=True)) == [(0, 4), (1, 5)]
    np.testing.assert_allclose(w2[derived], [0.7, 0.5])  # min of the two chained scores
    chosen, info = ilp.solve_grouping(a2, b2, kind2, w2, part, num_types=3, **LIMITS)
    assert chosen.all() and info.status == "optimal"


def test_parsing_config_rejects_bad_values():
    with pytest.raises(ValueError, match="matcher must be one of"):
        ParsingConfig(matcher="hungarian")
    with pytest.raises(ValueError, match="ilp_graph"):
        ParsingConfig(ilp_graph="complete")
    with pytest.raises(ValueError, match="ilp_fallback"):
        ParsingConfig(ilp_fallback="optimal")
    with pytest.raises(TypeError):
        group_people(np.zeros((4, 4, 17)), np.zeros((4, 4, 19, 2)), no_such_setting=1)
