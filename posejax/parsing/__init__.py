"""Bottom-up grouping: part peaks, PAF line integrals, bipartite matching, people assembly."""

from posejax.parsing.matching import MATCHERS, match_greedy, match_limb, match_optimal
from posejax.parsing.paf import assemble_people, group_people, paf_line_integral
from posejax.parsing.peaks import PartCandidates, find_peaks

__all__ = [
    "MATCHERS",
    "PartCandidates",
    "assemble_people",
    "find_peaks",
    "group_people",
    "match_greedy",
    "match_limb",
    "match_optimal",
    "paf_line_integral",
]
