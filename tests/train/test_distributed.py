"""Multi-process training: start-up settings, and 2 processes on localhost train like 1.

What "agree" means: both runs use the row-sharded data stream of ``train_worker.py`` (process
``p`` of ``n`` takes rows ``[p B/n, (p+1) B/n)`` of every global batch of one shared stream), so
every step sees the same global batch; then the per-step losses agree to a relative 1e-5 and the
final parameters to 1e-5, the only difference being the order of floating-point reductions
(gloo all-reduce across processes instead of one in-process sum).
"""

from __future__ import annotations

import pytest
from train_worker import TINY_RUN, assert_same_training, reference_run, train_in_subprocess

from posejax.train import distributed

SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "8",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_STEP_NODELIST": "gpu[017-020],cpu3",
}


@pytest.mark.parametrize(
    "nodelist, host",
    [
        ("node07", "node07"),
        ("node07,node08", "node07"),
        ("gpu[017-020],cpu3", "gpu017"),
        ("gpu[3,7-9]", "gpu3"),
        ("a-b[01]", "a-b01"),
    ],
)
def test_first_host_of_slurm_nodelists(nodelist, host):
    assert distributed.first_host(nodelist) == host


def test_slurm_environment():
    kwargs = distributed.resolve({"auto": "slurm"}, SLURM)
    # Port from the job id, as JAX's own SLURM detection does: 4242 % 4096 + 61440.
    assert kwargs == {
        "coordinator_address": "gpu017:61586",
        "num_processes": 8,
        "process_id": 5,
        "local_device_ids": [1],
        "cluster_detection_method": "deactivate",
    }
    kwargs = distributed.resolve(
        {"auto": "slurm", "port": 1234, "local_device_ids": [0, 1]},
        {**SLURM, "SLURM_STEP_NODELIST": "", "SLURM_JOB_NODELIST": "n1"},
    )
    assert kwargs["coordinator_address"] == "n1:1234"
    assert kwargs["local_device_ids"] == [0, 1]


def test_single_process_is_a_no_op():
    assert distributed.resolve({}, SLURM) is None  # SLURM alone does not opt in
    assert distributed.resolve({"auto": "slurm"}, {**SLURM, "SLURM_NTASKS": "1"}) is None
    assert (
        distributed.resolve({"num_processes": 1, "process_id": 0, "coordinator_address": "h:1"}, {})
        is None
    )
    assert distributed.initialize(None) is False
    assert distributed.initialize({"auto": None, "coordinator_address": None}) is False


def test_explicit_settings():
    kwargs = distributed.resolve(
        {
            "coordinator_address": "10.0.0.1:1234",
            "num_processes": 2,
            "process_id": 1,
            "local_device_ids": 0,
            "initialization_timeout": 60,
        },
        {},
    )
    assert kwargs == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 2,
        "process_id": 1,
        "local_device_ids": [0],
        "initialization_timeout": 60,
        "cluster_detection_method": "deactivate",
    }
    assert distributed.resolve({"auto": "jax"}, {}) == {}  # JAX detects TPU pods, MPI, ...


def test_submitit_local_tasks():
    env = {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": "123",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_GLOBALID": "1",
    }
    kwargs = distributed.resolve({"auto": "submitit"}, env)
    assert kwargs["coordinator_address"] == "127.0.0.1:61563"
    assert (kwargs["num_processes"], kwargs["process_id"]) == (2, 1)
    assert distributed.resolve({"auto": "submitit"}, {**env, "SUBMITIT_LOCAL_NTASKS": "1"}) is None
    # submitit on SLURM: the SLURM variables.
    slurm = {**SLURM, "SUBMITIT_EXECUTOR": "slurm"}
    assert distributed.resolve({"auto": "submitit"}, slurm)["process_id"] == 5


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"num_processes": 2}, "go together"),
        ({"auto": "mpi"}, "distributed.auto"),
        ({"auto": "slurm"}, "SLURM_NTASKS"),
        ({"procs": 2}, "unknown key"),
    ],
)
def test_bad_settings_say_which_key(cfg, message):
    with pytest.raises(ValueError, match=message):
        distributed.initialize(cfg) if "procs" in cfg else distributed.resolve(cfg, {})


@pytest.mark.multidevice
def test_two_processes_train_like_one(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    one = reference_run(base)
    two = train_in_subprocess(
        tmp_path_factory.mktemp("two_processes") / "run",
        [*TINY_RUN, f"data.data_dir={base / 'data'}"],
        processes=2,
    )
    assert int(two["processes"]) == 2 and int(two["devices"]) == 2
    assert_same_training(two, one)


@pytest.mark.parametrize("value, expected", [(None, None), ("cores", 6), (1, 1), (3, 3)])
def test_cpu_device_count(value, expected):
    assert distributed.cpu_device_count(value, cores=6) == expected


@pytest.mark.parametrize("value", [0, -2, "all", 1.5, True])
def test_bad_cpu_device_count_names_the_key(value):
    with pytest.raises(ValueError, match="distributed.cpu_devices"):
        distributed.cpu_device_count(value)


def test_a_device_count_in_xla_flags_wins():
    flags = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert distributed.set_cpu_devices("cores", environ=flags) is None
    assert distributed.set_cpu_devices(None, environ={}) is None


def test_cpu_devices_sets_the_device_count_of_a_fresh_process():
    import os
    import subprocess
    import sys

    code = (
        "from posejax.train import distributed; "
        "distributed.initialize({'cpu_devices': 3}); "
        "import jax; print(jax.device_count())"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-1] == "3"
