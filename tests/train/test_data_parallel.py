"""Data parallelism changes nothing but speed: 8 devices train exactly like 1.

The device count is fixed when JAX starts, so each side trains in its own interpreter
(``train_worker.py``) with ``--xla_force_host_platform_device_count`` set. With one process the
pipeline yields the whole global batch and ``shard_batch`` splits it over the devices, so both
runs see the same examples; only the order of floating-point reductions differs.
"""

from __future__ import annotations

import numpy as np
import pytest
from train_worker import TINY_RUN, assert_same_training, reference_run, train_in_subprocess

pytestmark = pytest.mark.multidevice


def test_eight_devices_train_like_one(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    one = reference_run(base)
    eight = train_in_subprocess(
        tmp_path_factory.mktemp("eight") / "run",
        [*TINY_RUN, f"data.data_dir={base / 'data'}"],
        devices=8,
    )
    assert int(one["devices"]) == 1 and int(eight["devices"]) == 8
    assert len(one["loss"]) == 3 and np.isfinite(one["loss"]).all()
    # Training moved the parameters far more than the tolerance: agreement means something.
    assert float(one["moved"]) > 1e-3
    assert_same_training(eight, one)
