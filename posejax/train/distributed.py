"""Multi-host start-up: join the processes of one run with ``jax.distributed.initialize``.

One process per host (TPU pods, CPU clusters) or one per GPU (SLURM with one task per GPU). After
:func:`initialize`, ``jax.devices()`` lists every device of every process, the training mesh in
``posejax.train.loop`` spans them all, and ``jax.process_index()`` picks each host's share of the
data. A single process needs nothing: :func:`initialize` is then a no-op.

Four ways to say who is who (``conf/config.yaml``, group ``distributed``):

* ``distributed.auto=slurm``: read SLURM's environment (``SLURM_NTASKS``, ``SLURM_PROCID``,
  ``SLURM_LOCALID``, the first host of ``SLURM_STEP_NODELIST``); the coordinator port is
  ``distributed.port`` or, if null, derived from ``SLURM_JOB_ID`` so that jobs sharing a node do
  not collide.
* ``distributed.auto=submitit``: the tasks of a hydra-submitit-launcher job, on SLURM (as above)
  or on this machine (``hydra/launcher=submitit_local`` with ``tasks_per_node > 1``, which is how
  a multi-process launch can be tried without a cluster).
* ``distributed.auto=jax``: let JAX detect the cluster (Cloud TPU pods, Open MPI, Kubernetes).
* explicit keys ``coordinator_address``, ``num_processes``, ``process_id`` (and optionally
  ``local_device_ids``), e.g. for a few machines started by hand.

CPU-only runs (tests, CPU clusters) need nothing extra: in the installed jax (0.10)
cross-process collectives on CPU default to gloo over TCP (``jax_cpu_collectives_implementation``
defaults to ``"gloo"``; ``"mpi"`` is the alternative).

``initialize`` must run before anything touches a JAX backend (``jax.devices()``, creating an
array): JAX refuses to join a cluster afterwards.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import jax

log = logging.getLogger(__name__)

AUTO_MODES = ("slurm", "submitit", "jax")
# Keys of the ``distributed`` config group.
KEYS = (
    "auto",
    "coordinator_address",
    "num_processes",
    "process_id",
    "local_device_ids",
    "port",
    "initialization_timeout",
    "cpu_devices",
)


def initialize(cfg_distributed: Mapping[str, Any] | None) -> bool:
    """Join this process to a multi-process JAX run if the config (or SLURM) says so.

    Args:
      cfg_distributed: the ``distributed`` config node (a dict or DictConfig), or None.

    Returns:
      True if this call initialised ``jax.distributed``; False for a single process or when it
      was already initialised (calling twice is harmless).

    Raises:
      ValueError: an unknown key, an unknown ``auto`` mode, or explicit settings that are
        incomplete (``coordinator_address``, ``num_processes`` and ``process_id`` go together).
      RuntimeError: from JAX, if a backend was already initialised in this process.
    """
    cfg = dict(cfg_distributed or {})
    unknown = sorted(set(cfg) - set(KEYS))
    if unknown:
        raise ValueError(f"distributed: unknown key(s) {unknown}; valid keys are {list(KEYS)}")
    set_cpu_devices(cfg.get("cpu_devices"))
    if jax.distributed.is_initialized():
        return False
    kwargs = resolve(cfg, os.environ)
    if kwargs is None:
        return False
    log.info(
        "jax.distributed.initialize: process %s of %s, coordinator %s",
        kwargs.get("process_id", "?"),
        kwargs.get("num_processes", "?"),
        kwargs.get("coordinator_address", "auto"),
    )
    jax.distributed.initialize(**kwargs)
    return True


def cpu_device_count(value: Any, cores: int | None = None) -> int | None:
    """``distributed.cpu_devices`` as a number of devices: null -> None (JAX's default, one CPU
    device), ``cores`` -> the cores this process may run on, or a positive integer."""
    if value is None:
        return None
    if value == "cores":
        return cores or len(os.sched_getaffinity(0))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"distributed.cpu_devices={value!r}: expected null, 'cores' or a positive integer"
        )
    return value


def set_cpu_devices(value: Any, environ: Mapping[str, str] | None = None) -> int | None:
    """Make the CPU backend present ``distributed.cpu_devices`` devices (``jax_num_cpu_devices``).

    The training mesh spans every device, so on a CPU this is data parallelism over cores:
    each device runs its share of the batch, the gradients are summed across them. It pays
    where one device's convolutions are too small to keep every core busy (top-down 96x72
    crops: heatmap 407 -> 525 images/s on 2 cores, regression 533 -> 642) and costs where they
    are not (128x128 PAF 101 -> 76, segmentation 318 -> 295; ``benchmarks/bench_train.py``,
    2026-12-02, README "Benchmarks"). GPU and TPU backends ignore it. A device count already in
    ``XLA_FLAGS`` (``--xla_force_host_platform_device_count``) wins. Must run before anything
    starts a JAX backend; returns the count set, or None.
    """
    count = cpu_device_count(value)
    environ = os.environ if environ is None else environ
    if count is None or "xla_force_host_platform_device_count" in environ.get("XLA_FLAGS", ""):
        return None
    if jax.config.jax_num_cpu_devices != count:  # (setting it again once started would raise)
        jax.config.update("jax_num_cpu_devices", count)
    return count


def resolve(cfg: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The keyword arguments for ``jax.distributed.initialize``, or None for a single process.

    Pure (reads only its arguments), so the SLURM parsing is testable without a cluster.
    """
    auto = cfg.get("auto")
    timeout = cfg.get("initialization_timeout")
    extra = {} if timeout is None else {"initialization_timeout": int(timeout)}
    # Once everything is resolved here, JAX must not guess again (it would, for example, narrow
    # an explicit run inside a SLURM allocation to one GPU per process).
    resolved = {**extra, "cluster_detection_method": "deactivate"}
    if auto is not None and auto not in AUTO_MODES:
        raise ValueError(f"distributed.auto={auto!r}: expected null or one of {list(AUTO_MODES)}")

    if auto == "jax":
        return {**extra}
    if auto == "submitit" and environ.get("SUBMITIT_EXECUTOR") == "local":
        num_processes = int(environ.get("SUBMITIT_LOCAL_NTASKS", "1"))
        if num_processes <= 1:
            return None
        port = cfg.get("port") or _port_from_job_id(environ.get("SUBMITIT_LOCAL_JOB_ID", "0"))
        return {
            "coordinator_address": f"127.0.0.1:{int(port)}",
            "num_processes": num_processes,
            "process_id": int(environ["SUBMITIT_LOCAL_GLOBALID"]),
            **resolved,
        }
    if auto in ("slurm", "submitit"):
        if "SLURM_NTASKS" not in environ or "SLURM_PROCID" not in environ:
            raise ValueError(
                f"distributed.auto={auto} but SLURM_NTASKS / SLURM_PROCID are not set: "
                "is this process running inside an srun step?"
            )
        num_processes = int(environ["SLURM_NTASKS"])
        if num_processes <= 1:
            return None
        nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise ValueError(
                f"distributed.auto={auto}: neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST "
                "is set"
            )
        port = cfg.get("port") or _port_from_job_id(environ.get("SLURM_JOB_ID", "0"))
        kwargs = {
            "coordinator_address": f"{first_host(nodelist)}:{int(port)}",
            "num_processes": num_processes,
            "process_id": int(environ["SLURM_PROCID"]),
            **resolved,
        }
        local_ids = cfg.get("local_device_ids")
        if local_ids is None and "SLURM_LOCALID" in environ:
            # One task per GPU: task i of a node drives that node's GPU i (JAX applies it to
            # GPUs only; CPU processes keep their devices).
            local_ids = [int(environ["SLURM_LOCALID"])]
        if local_ids is not None:
            kwargs["local_device_ids"] = _device_ids(local_ids)
        return kwargs

    explicit = {k: cfg.get(k) for k in ("coordinator_address", "num_processes", "process_id")}
    given = [k for k, v in explicit.items() if v is not None]
    if not given:
        return None
    if len(given) < len(explicit):
        missing = sorted(set(explicit) - set(given))
        raise ValueError(
            f"distributed: {given} set but {missing} missing; coordinator_address, "
            "num_processes and process_id go together (or use distributed.auto=slurm|jax)"
        )
    if int(explicit["num_processes"]) <= 1:
        return None
    kwargs = {
        "coordinator_address": str(explicit["coordinator_address"]),
        "num_processes": int(explicit["num_processes"]),
        "process_id": int(explicit["process_id"]),
        **resolved,
    }
    if cfg.get("local_device_ids") is not None:
        kwargs["local_device_ids"] = _device_ids(cfg["local_device_ids"])
    return kwargs


def first_host(nodelist: str) -> str:
    """First host name of a SLURM node list.

    ``"node07"`` -> ``"node07"``; ``"gpu[003-006,010],cpu1"`` -> ``"gpu003"``;
    ``"a-[1,4]"`` -> ``"a-1"``.
    """
    match = re.match(r"([^,\[]+)(?:\[([^\]\-,]+))?", nodelist.strip())
    if match is None:
        raise ValueError(f"cannot read a host name from SLURM node list {nodelist!r}")
    prefix, first_index = match.groups()
    return prefix + (first_index or "")


def _port_from_job_id(job_id: str) -> int:
    # Same rule as JAX's own SLURM detection: a port in the top 4096 of the range, chosen by job
    # id, so two jobs sharing a node pick different ports.
    digits = re.sub(r"\D", "", job_id) or "0"
    return int(digits) % 4096 + 65535 - 4095


def _device_ids(value: Any) -> list[int]:
    if isinstance(value, int | str):
        return [int(value)]
    return [int(v) for v in value]
