"""benchmarks/bench_conv.py: distinct calls are timed once each, with their count per step."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_conv import layer_timings  # noqa: E402

from posejax import kernels  # noqa: E402


@pytest.mark.skipif(not kernels.conv3x3_available(), reason="no AVX-512F CPU here")
def test_layer_timings_time_each_distinct_call_once():
    same = {
        "kind": "forward",
        "x_shape": (2, 8, 6, 16),
        "w_shape": (3, 3, 16, 16),
        "strides": (1, 1),
        "pads": ((1, 1), (1, 1)),
    }
    strided = {**same, "strides": (2, 2), "pads": ((0, 1), (0, 1))}
    grad = {**strided, "kind": "weight_grad"}
    rows = layer_timings([same, strided, same, grad], rounds=2, repeats=2)
    assert [r["calls_per_step"] for r in rows] == [2, 1, 1]
    assert [r["strides"] for r in rows] == [[1, 1], [2, 2], [2, 2]]
    assert [r["kind"] for r in rows] == ["forward", "forward", "weight_grad"]
    assert all(r["xla_ms"] > 0 and r["native_ms"] > 0 for r in rows)
