"""Training in fresh interpreters, for the data-parallel, multi-process and precision tests.

Not a test module. As a script::

    python tests/train/train_worker.py --run-dir D --out F.npz \
        [--num-processes N --process-id I --coordinator HOST:PORT] \
        -- [hydra overrides]

it trains with ``posejax.train.loop.train`` and, on process 0, writes the final parameters
(``params/<path>``) and the logged losses (``loss``) to ``F.npz``. It needs its own interpreter
because the device count (``XLA_FLAGS``) and ``jax.distributed.initialize`` must be fixed before
JAX creates a backend. :func:`train_in_subprocess` starts it from a test.

Data: each process takes rows ``[p B/n, (p+1) B/n)`` of every global batch of one shared stream
(the pipeline's host sharding, ``posejax.data.pipeline.make_train_dataset``), so the union of
the hosts' batches is exactly the batch one process sees, and N processes must train exactly
like one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).resolve()
CONF_DIR = WORKER.parents[2] / "conf"

# Small and fast: 3 updates of the tiny backbone on 8 crops, one short evaluation at the end.
TINY_RUN = [
    "data=synthetic_tiny",
    "backbone=tiny",
    "trainer.steps=3",
    "trainer.batch_size=8",
    "trainer.log_every=1",
    "trainer.eval_every=3",
    "trainer.checkpoint_every=3",
    "trainer.eval_images=4",
    "trainer.final_eval_images=4",
    "trainer.num_visualize=0",
    "trainer.tensorboard=false",
    "trainer.progress=false",
]


# --------------------------------------------------------------------------- test side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    # Optimisation level 0 makes XLA's CPU compiles (most of these runs' time) ~5x faster; every
    # run compared in a test uses the same flags.
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    )
    return env


def train_in_subprocess(
    run_dir: Path,
    overrides: list[str],
    *,
    devices: int = 1,
    processes: int = 1,
    timeout: float = 240,
) -> dict:
    """Train in ``processes`` fresh interpreters with ``devices`` CPU devices each.

    Returns the arrays written by process 0 (``loss`` per logged step, ``devices``,
    ``processes``, ``moved``: the largest parameter change from initialisation, and the final
    ``params/...``) as a dict of NumPy arrays.
    """
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    out = run_dir.with_suffix(".npz")
    port = free_port()
    procs, logs = [], []
    for pid in range(processes):
        log_path = run_dir.with_name(f"{run_dir.name}.p{pid}.log")
        logs.append(log_path)
        cmd = [sys.executable, str(WORKER), "--run-dir", str(run_dir), "--out", str(out)]
        if processes > 1:
            cmd += ["--num-processes", str(processes), "--process-id", str(pid)]
            cmd += ["--coordinator", f"127.0.0.1:{port}"]
        with open(log_path, "w") as log_file:
            procs.append(
                subprocess.Popen(
                    [*cmd, "--", *overrides],
                    env=worker_env(devices),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(codes):
        tails = "\n".join(
            f"--- process {i} exited {c}:\n" + "\n".join(log.read_text().splitlines()[-25:])
            for i, (c, log) in enumerate(zip(codes, logs, strict=True))
        )
        raise RuntimeError(f"training subprocess failed\n{tails}")
    with np.load(out) as data:
        return dict(data)


def assert_same_training(got: dict, want: dict) -> None:
    """Same per-step losses (relative 1e-5) and final parameters (absolute 1e-5)."""
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    names = sorted(k for k in want if k.startswith("params/"))
    assert names and names == sorted(k for k in got if k.startswith("params/"))
    for name in names:
        assert got[name].dtype == want[name].dtype == np.float32, name
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5, err_msg=name)


def reference_run(base: Path) -> dict:
    """1 process, 1 device, :data:`TINY_RUN`; trained once per pytest session (cached on disk).

    Also builds the tiny dataset in ``base / "data"``, which later runs (several processes at a
    time) then only read.
    """
    run_dir = base / "reference" / "run"
    out = run_dir.with_suffix(".npz")
    if out.exists():
        with np.load(out) as data:
            return dict(data)
    return train_in_subprocess(run_dir, [*TINY_RUN, f"data.data_dir={base / 'data'}"])


# --------------------------------------------------------------------------- worker side


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)

    from posejax.train import distributed

    # Before anything creates a JAX array (importing posejax.models does).
    distributed.initialize(
        {
            "coordinator_address": args.coordinator,
            "num_processes": args.num_processes,
            "process_id": args.process_id,
            "initialization_timeout": 60,
        }
        if args.num_processes > 1
        else None
    )

    import jax
    from hydra import compose, initialize_config_dir

    from posejax.runs.checkpoint import Checkpointer
    from posejax.runs.setup import build_setup
    from posejax.runs.state import ModelDef
    from posejax.train import loop

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    run_dir = Path(args.run_dir)
    loop.train(cfg, run_dir)

    # Every process takes part in the restore (orbax synchronises hosts); process 0 writes.
    checkpointer = Checkpointer(run_dir / "checkpoints")
    _, state, _ = checkpointer.restore_latest(None)
    checkpointer.close()
    if jax.process_index() == 0:
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        params = {
            "params/" + jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state["params"])
        }
        # How far training moved the parameters (the same seed rebuilds the initial ones).
        initial = ModelDef(build_setup(cfg).model).initial_params
        moved = max(
            float(np.abs(np.asarray(a) - np.asarray(b)).max())
            for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(initial), strict=True)
        )
        np.savez(
            args.out,
            loss=np.array([r["loss"] for r in rows]),
            devices=np.array(jax.device_count()),
            processes=np.array(jax.process_count()),
            moved=np.array(moved),
            **params,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
