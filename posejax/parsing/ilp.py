"""Grouping part candidates into people by one integer linear program (DeepCut-style).

OpenPose (Cao et al., CVPR 2017, Sec. 2.4) replaces the global grouping problem by independent
bipartite matchings, one per limb of a tree, and assembles people from the matched pairs.
DeepCut (Pishchulin et al., CVPR 2016) instead partitions all part candidates into people with
one integer linear program over a dense graph; Cao et al. report (Table 2, MPII validation)
greedy matching on the tree 77.4 mAP at 0.005 s per image, the ILP on the tree 77.6 at 43 s,
the ILP on the fully connected graph 78.3 at 362 s. This module is that global alternative,
solved with HiGHS through ``scipy.optimize.milp``.

The program
-----------
Candidates ``c`` (one part type each) are the nodes; every valid candidate pair ``e = (a, b)``
of a *pair type* (a limb of the limb graph, or a derived pair of the dense option) is an edge
with weight ``w_e > 0`` (its PAF connection score) and a binary variable ``x_e`` = "a and b
belong to the same person". People are the connected components of the chosen edges.

    maximise   sum_e w_e x_e
    subject to (1) sum_{e of type t at candidate c} x_e <= 1        for every c and type t
               (2) sum_{e in P} x_e <= |P| - 1      for every path P of edges joining two
                   candidates of the same part (a person holds at most one of each part)
               (3) x_ab + x_bc - x_ac <= 1 (and rotations)  for every candidate triangle
                   (transitivity: the chosen edges describe a partition, as in a multicut)

(1) and (3) are written down at once. (2) has exponentially many rows, so it is separated
lazily: solve, find components holding two candidates of one part, add the row of the
shortest chosen path between them, solve again (a cutting-plane loop, as multicut solvers
separate cycle inequalities). Every edge weight is positive, so any edge inside a component
whose row (1) allows it is chosen at the optimum: the partition is consistent with all
edges, not only with the triangles.

Limits
------
The program has one variable per valid candidate pair; beyond ``max_variables`` the call raises
:class:`GroupingTooLarge` (or, with ``fallback="greedy"`` in
:func:`posejax.parsing.paf.group_people`, logs a warning and parses greedily, saying so in
the returned :class:`GroupingInfo`). ``time_limit`` bounds the whole loop; when it runs out
the best solution found is repaired into a valid partition (connections taken by decreasing
score, those that would give a person a second candidate of a part dropped) and the status
says so.

The dense option (``graph="dense"``) adds a derived pair type for every two part types
joined through a third by two limbs (e.g. shoulder-wrist through the elbow): the pair
``(a, c)`` gets the score ``max_b min(w_ab, w_bc)`` over candidates ``b`` of the middle part,
a "chained field" with no new measurement, plus the triangle rows (3) of those triples.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.optimize import LinearConstraint, milp

GRAPHS = ("limbs", "dense")


class GroupingTooLarge(ValueError):
    """The ILP would exceed its documented size limit."""


@dataclasses.dataclass
class GroupingInfo:
    """How one image was grouped.

    Attributes:
      method: ``"ilp"`` or ``"greedy"`` (also when the ILP fell back to it).
      status: ``"optimal"``, ``"time_limit"`` or ``"round_limit"`` (the best solution found,
        repaired by the assembly if it still joins two candidates of a part),
        ``"fallback: <reason>"`` or, for the per-limb matchers, ``"heuristic"``.
      gap: relative optimality gap of the last solve (0 when optimal; NaN if unknown).
      variables: binary variables (candidate pairs) of the program.
      constraints: rows of the final program.
      rounds: solves of the cutting-plane loop.
      seconds: wall time of the grouping.
    """

    method: str
    status: str
    gap: float = 0.0
    variables: int = 0
    constraints: int = 0
    rounds: int = 0
    seconds: float = 0.0


class GroupingFailed(RuntimeError):
    """The solver returned no solution at all (not even the empty grouping)."""


def dense_pairs(
    a: np.ndarray,
    b: np.ndarray,
    kind: np.ndarray,
    weight: np.ndarray,
    part: np.ndarray,
    type_parts: Sequence[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Add the derived pair types of the dense option to limb pairs.

    Args:
      a, b, kind, weight: ``(E,)`` candidate pairs (candidate indices), their pair type (index
        into ``type_parts``) and weight.
      part: ``(C,)`` part type of each candidate.
      type_parts: ``(A, B)`` part types of each pair type.

    Returns:
      ``(a, b, kind, weight, type_parts)`` extended by one type per part pair ``(A, C)`` that
      is not a type already but is joined by two types ``A-B`` and ``B-C``; a candidate pair of
      a derived type is scored ``max_b min(w_ab, w_bc)`` over the candidates ``b`` that link it.
    """
    known = {frozenset(p) for p in type_parts}
    neighbours: dict[int, set[int]] = {}
    for pa, pb in type_parts:
        neighbours.setdefault(pa, set()).add(pb)
        neighbours.setdefault(pb, set()).add(pa)
    derived: list[tuple[int, int]] = []
    for middle in sorted(neighbours):
        near = sorted(neighbours[middle])
        for i, pa in enumerate(near):
            for pc in near[i + 1 :]:
                if frozenset((pa, pc)) not in known and (pa, pc) not in derived:
                    derived.append((pa, pc))
    type_of = {frozenset(p): len(type_parts) + i for i, p in enumerate(derived)}
    links: dict[int, list[tuple[int, float]]] = {}
    for u, v, w in zip(a.tolist(), b.tolist(), weight.tolist(), strict=True):
        links.setdefault(u, []).append((v, w))
        links.setdefault(v, []).append((u, w))
    best: dict[tuple[int, int], tuple[float, int]] = {}
    for ends in links.values():
        for i, (u, wu) in enumerate(ends):
            for v, wv in ends[i + 1 :]:
                t = type_of.get(frozenset((int(part[u]), int(part[v]))))
                if t is None:
                    continue
                key = (min(u, v), max(u, v))
                if min(wu, wv) > best.get(key, (0.0, t))[0]:
                    best[key] = (min(wu, wv), t)
    types = list(type_parts) + derived
    if not best:
        return a, b, kind, weight, types
    keys = sorted(best)
    extra = np.asarray(keys, np.int64).reshape(-1, 2)
    return (
        np.concatenate([a, extra[:, 0]]),
        np.concatenate([b, extra[:, 1]]),
        np.concatenate([kind, [best[k][1] for k in keys]]).astype(np.int64),
        np.concatenate([weight, [best[k][0] for k in keys]]).astype(np.float64),
        types,
    )


def _rows_of_incidence(a, b, kind, num_types: int) -> list[np.ndarray]:
    """Rows (1): edges of one type meeting at one candidate, where there are at least two."""
    edges = np.arange(a.size)
    keys = np.concatenate([a * num_types + kind, b * num_types + kind])
    owners = np.concatenate([edges, edges])
    order = np.argsort(keys, kind="stable")
    keys, owners = keys[order], owners[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    groups = np.split(owners, starts[1:])
    return [g for g in groups if g.size > 1]


def _triangle_rows(a, b) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows (3): for each candidate triangle, ``x_i + x_j - x_k <= 1`` for the three ``k``."""
    index = {}
    adjacency: dict[int, set[int]] = {}
    for e, (u, v) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        index[(min(u, v), max(u, v))] = e
        adjacency.setdefault(u, set()).add(v)
        adjacency.setdefault(v, set()).add(u)
    rows = []
    for (u, v), e_uv in index.items():
        for w in adjacency[u] & adjacency[v]:
            if w <= v:
                continue  # each triangle once, from its two smallest candidates
            e_uw, e_vw = index[(u, w)], index[(min(v, w), max(v, w))]
            trio = np.asarray([e_uv, e_uw, e_vw])
            for k in range(3):
                rows.append((trio, np.where(np.arange(3) == k, -1.0, 1.0)))
    return rows


def conflict_paths(chosen: np.ndarray, a, b, part) -> list[np.ndarray]:
    """Shortest chosen paths joining two candidates of one part within one component.

    Returns one array of edge indices per conflicting pair (the first candidate of a part in a
    component against each other one); empty when the chosen edges form a valid partition.
    """
    adjacency: dict[int, list[tuple[int, int]]] = {}
    for e in np.flatnonzero(chosen).tolist():
        u, v = int(a[e]), int(b[e])
        adjacency.setdefault(u, []).append((v, e))
        adjacency.setdefault(v, []).append((u, e))
    seen: set[int] = set()
    paths = []
    for root in adjacency:
        if root in seen:
            continue
        # Breadth-first tree of the component from its root, then shortest paths between each
        # part's first candidate and its others.
        component = _bfs_parents(root, adjacency)
        seen.update(component)
        first_of: dict[int, int] = {}
        for node in component:
            p = int(part[node])
            if p not in first_of:
                first_of[p] = node
                continue
            parent = _bfs_parents(first_of[p], adjacency, stop=node)
            edges = []
            while node != first_of[p]:
                node, e = parent[node]
                edges.append(e)
            paths.append(np.asarray(edges, np.int64))
    return paths


def _bfs_parents(source: int, adjacency, stop: int | None = None) -> dict[int, tuple[int, int]]:
    """``{node: (parent, edge)}`` of a breadth-first search from ``source`` (until ``stop``)."""
    parent = {source: (-1, -1)}
    queue = deque([source])
    while queue:
        u = queue.popleft()
        if u == stop:
            break
        for v, e in adjacency[u]:
            if v not in parent:
                parent[v] = (u, e)
                queue.append(v)
    return parent


def solve_grouping(
    a: np.ndarray,
    b: np.ndarray,
    kind: np.ndarray,
    weight: np.ndarray,
    part: np.ndarray,
    *,
    num_types: int,
    max_variables: int,
    time_limit: float,
    max_rounds: int = 100,
) -> tuple[np.ndarray, GroupingInfo]:
    """Choose the candidate pairs that maximise the total weight of a valid partition.

    Args:
      a, b: ``(E,)`` candidate indices of each pair.
      kind: ``(E,)`` pair type (rows (1) are per candidate and type).
      weight: ``(E,)`` positive weights.
      part: ``(C,)`` part type of every candidate.
      num_types: number of pair types.
      max_variables: size limit; more pairs raise :class:`GroupingTooLarge`
        (``ParsingConfig.ilp_max_variables`` in :func:`posejax.parsing.paf.group_people`).
      time_limit: seconds for the whole cutting-plane loop (``ParsingConfig.ilp_time_limit``).
      max_rounds: most solves of the loop.

    Returns:
      ``(chosen, info)``: ``(E,)`` bool and the solver's report. With ``info.status ==
      "optimal"`` the chosen pairs form a valid partition; otherwise they may still join two
      candidates of a part, and the caller repairs them (``assemble_people`` does).

    Raises:
      GroupingTooLarge: ``E > max_variables``.
      GroupingFailed: the solver returned no solution.
    """
    start = time.perf_counter()
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    kind, weight = np.asarray(kind, np.int64), np.asarray(weight, np.float64)
    num_edges = a.size
    if num_edges > max_variables:
        raise GroupingTooLarge(
            f"ILP grouping: {num_edges} candidate pairs exceed the limit "
            f"ilp_max_variables={max_variables}; raise the limit, keep fewer candidates "
            "(max_candidates, peak_threshold) or set ilp_fallback='greedy'"
        )
    if num_edges == 0:
        return np.zeros(0, bool), GroupingInfo("ilp", "optimal", seconds=0.0)
    rows: list[tuple[np.ndarray, np.ndarray, float]] = []
    for group in _rows_of_incidence(a, b, kind, num_types):
        rows.append((group, np.ones(group.size), 1.0))
    for trio, signs in _triangle_rows(a, b):
        rows.append((trio, signs, 1.0))
    status, gap, rounds = "optimal", 0.0, 0
    chosen = np.zeros(num_edges, bool)
    while True:
        remaining = time_limit - (time.perf_counter() - start)
        if remaining <= 0 or rounds >= max_rounds:
            status = "time_limit" if remaining <= 0 else "round_limit"
            break
        constraints = ()
        if rows:
            data = np.concatenate([r[1] for r in rows])
            cols = np.concatenate([r[0] for r in rows])
            row_ids = np.repeat(np.arange(len(rows)), [r[0].size for r in rows])
            matrix = sparse.csr_array((data, (row_ids, cols)), shape=(len(rows), num_edges))
            constraints = LinearConstraint(matrix, -np.inf, np.asarray([r[2] for r in rows]))
        result = milp(
            -weight,
            integrality=np.ones(num_edges),
            bounds=(0.0, 1.0),
            constraints=constraints,
            options={"time_limit": remaining},
        )
        rounds += 1
        if result.x is None:
            raise GroupingFailed(
                f"ILP grouping: HiGHS returned no solution (status {result.status}: "
                f"{result.message})"
            )
        chosen = result.x > 0.5
        gap = float(getattr(result, "mip_gap", np.nan) or 0.0)
        cuts = conflict_paths(chosen, a, b, part)
        if result.status != 0:
            status = "time_limit"
            break
        if not cuts:
            break
        for path in cuts:
            rows.append((path, np.ones(path.size), float(path.size - 1)))
    info = GroupingInfo(
        "ilp",
        status,
        gap=gap,
        variables=num_edges,
        constraints=len(rows),
        rounds=rounds,
        seconds=time.perf_counter() - start,
    )
    return chosen, info
