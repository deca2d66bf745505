"""The benchmark scripts' shared argument handling."""

import argparse
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", REPO / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_after_formulations_are_moved_to_the_overrides():
    common = _common()
    args = argparse.Namespace(
        formulations=["heatmap", "data.augment.enabled=false", "regression"],
        overrides=["trainer.batch_size=8"],
    )
    common.split_overrides(args)
    assert args.formulations == ["heatmap", "regression"]
    assert args.overrides == ["data.augment.enabled=false", "trainer.batch_size=8"]
    only = argparse.Namespace(formulations=["experiment=e1_quick"], overrides=[])
    common.split_overrides(only)
    assert only.formulations is None and only.overrides == ["experiment=e1_quick"]  # None: all
