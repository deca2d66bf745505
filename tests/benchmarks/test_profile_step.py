"""benchmarks/profile_step.py's pure parts: grouping op names and summing a Perfetto trace."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from profile_step import group_of, op_times  # noqa: E402


def test_groups():
    assert group_of("conv_general_dilated.65") == "convolution"
    assert group_of("convolution-base-dilated.4") == "convolution"
    assert group_of("transpose_copy_fusion.3") == "transpose/copy"
    assert group_of("copy.478") == "transpose/copy"
    assert group_of("select_reduce_fusion.6") == "reduce"
    assert group_of("all-reduce.48") == "elementwise/other"
    assert group_of("ynn_fusion.3") == "elementwise/other"


def test_op_times_sums_complete_events_per_step_and_skips_runtime_events():
    trace = {
        "traceEvents": [
            {"ph": "X", "name": "convolution.1", "dur": 3000},
            {"ph": "X", "name": "convolution.1", "dur": 1000},
            {"ph": "X", "name": "add_fusion", "dur": 500},
            {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 9000},
            {"ph": "X", "name": "$api.py:2479 block_until_ready", "dur": 9000},
            {"ph": "i", "name": "marker"},
        ]
    }
    assert op_times(trace, steps=2) == {"convolution.1": 2.0, "add_fusion": 0.25}
