"""benchmarks/bench_vs_torch.py's headline: posejax's best setting against torch's best."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_vs_torch import headline  # noqa: E402


def _row(network, cpu_devices, threads, ratio):
    return {
        "network": network,
        "cpu_devices": cpu_devices,
        "torch_threads": threads,
        "ratio": ratio,
    }


def test_headline_takes_the_fastest_torch_within_a_setting_and_the_best_setting():
    rows = [
        _row("heatmap", "null", 1, 1.4),  # torch slow at one thread: not the comparison
        _row("heatmap", "null", 2, 0.8),
        _row("heatmap", "cores", 1, 1.8),
        _row("heatmap", "cores", 2, 0.99),
        _row("paf", "null", 1, 2.0),
        _row("paf", "null", 2, 1.3),
        _row("paf", "cores", 1, 1.1),
        _row("paf", "cores", 2, 0.9),
    ]
    best = headline(rows)
    assert best["heatmap"] == {"cpu_devices": "cores", "torch_threads": 2, "ratio": 0.99}
    assert best["paf"] == {"cpu_devices": "null", "torch_threads": 2, "ratio": 1.3}
