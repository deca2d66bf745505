"""posejax's compiled train step against the same network written in PyTorch, on the same CPU.

Two networks, each the default of its formulation family, built from the Hydra config (so the
crop size, widths and optimizer are whatever ``conf/`` says today):

* ``heatmap``: top-down Gaussian heatmaps (``formulation=heatmap``, ``backbone=small``) at the
  config's ``data.top_down.input_size``;
* ``paf``: bottom-up Part Affinity Fields (``formulation=paf_quick``) at the config's
  ``data.bottom_up.input_size``.

The posejax side is the training loop's own jitted step (``benchmarks/common.Trainer``); the
torch side is ``benchmarks/torch_twin.py`` (eager, CPU build, its default NCHW layout unless
``--torch-channels-last``). Both train on the same pre-read batches, steps include target
encoding, loss, backward, clipping and AdamW. Rounds alternate between the two in one process
(posejax first in even rounds, torch first in odd ones, so a change in machine load hits both);
each side's step time is the median over rounds. Ratio = posejax images/s / torch images/s.

Needs the optional extra: ``pip install -e .[bench]`` (torch pinned to a CPU build). Without
torch the script says so and exits 0, so ``make bench`` still runs the other benchmarks.

posejax is timed at each ``--cpu-devices`` setting (default: one CPU device, and one device per
core with the batch split over them, ``distributed.cpu_devices=cores``) and torch at each
``--torch-threads`` count (default 1 and torch's own), one process per pair: JAX fixes its
device count when it starts, and a process that switches torch's thread count between rounds
slows the posejax rounds after it (OpenMP threads left spinning: the 2-device heatmap step
measured 391 images/s beside torch at 1 and 2 threads, 493 and 494 beside torch at one count).
The headline per network is posejax's best setting against torch's best thread count, each
pair's ratio taken within its own process (:func:`headline`).

Run:  .venv/bin/python benchmarks/bench_vs_torch.py [--networks heatmap paf] [overrides...]
(writes benchmarks/results/bench_vs_torch.json and .md)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import (
    Trainer,
    compose_config,
    data_dir_override,
    markdown_table,
    median,
    write_report,
)
from omegaconf import OmegaConf

NETWORKS = {"heatmap": "heatmap", "paf": "paf_quick"}  # network -> conf/formulation/<name>


def _timed(fn, steps: int, finish=lambda: None) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls, ``finish()`` (waiting for the last
    one) included."""
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    finish()
    return (time.perf_counter() - start) / steps


def compare(network: str, overrides: list[str], args) -> dict:
    from torch_twin import TorchTwin

    cfg = compose_config([f"formulation={NETWORKS[network]}", *data_dir_override(), *overrides])
    trainer = Trainer(cfg)
    setup = trainer.setup
    iterator = trainer.iterator()
    host_batches = [next(iterator) for _ in range(4)]

    # posejax: the loop's jitted step, on batches already on the device, dispatched as the loop
    # and bench_train.py dispatch it (no wait between steps; a round waits for its last step).
    jax_batches = [trainer.shard(b) for b in host_batches]
    rng = jax.random.key(0)
    state = trainer.state
    step = trainer.compiled_step
    flops = trainer.step_flops()
    calls = 0

    def jax_step():
        nonlocal state, calls
        state, metrics = step(state, jax_batches[calls % len(jax_batches)], rng)
        calls += 1

    def jax_finish():
        jax.block_until_ready(state)

    # torch: the twin, on the same batches as CPU tensors.
    schedule = trainer.program.schedule
    lrs = np.asarray(jax.vmap(schedule)(jnp.arange(setup.trainer.steps)))
    twin = TorchTwin(
        setup.formulation,
        OmegaConf.to_container(cfg.backbone, resolve=True),
        clip_norm=setup.optim.clip_norm,
        weight_decay=setup.optim.weight_decay,
        lr_schedule=lrs,
        channels_last=args.torch_channels_last,
        seed=setup.trainer.seed,
    )
    torch_batches = [twin.to_tensors(b) for b in host_batches]
    torch_calls = 0

    def torch_step():
        nonlocal torch_calls
        twin.train_step(torch_batches[torch_calls % len(torch_batches)])
        torch_calls += 1

    jax_params = sum(x.size for x in jax.tree.leaves(state.params))
    if jax_params != twin.num_params():
        raise AssertionError(
            f"{network}: the torch twin has {twin.num_params()} parameters, posejax {jax_params}"
        )

    import torch

    # torch at each thread count (its OpenMP threads spin-wait, which collapses on a loaded
    # machine: 1 thread can beat 2 by 10x there), posejax as XLA:CPU configures itself.
    def torch_at(threads: int):
        def run():
            torch.set_num_threads(threads)
            torch_step()

        return run

    timers = {"posejax": jax_step} | {f"torch_{n}t": torch_at(n) for n in args.torch_threads}
    finish = {"posejax": jax_finish}
    for name, fn in timers.items():  # warm-up (allocator, thread pools, oneDNN primitives)
        _timed(fn, 2, finish.get(name, lambda: None))
    slowest = max(_timed(fn, 1, finish.get(n, lambda: None)) for n, fn in timers.items())
    steps = max(2, min(args.steps, int(args.round_seconds / slowest)))
    times = {name: [] for name in timers}
    names = list(timers)
    for r in range(args.rounds):
        # Rotate the order every round, so a change in machine load hits every side alike.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(_timed(timers[name], steps, finish.get(name, lambda: None)))
    trainer.state = state
    batch = setup.trainer.batch_size
    step_s = {name: median(t) for name, t in times.items()}
    best_torch = min((n for n in names if n != "posejax"), key=step_s.get)
    return {
        "network": network,
        "formulation": NETWORKS[network],
        "devices": jax.device_count(),
        "input_size": list(setup.data.pipeline.input_size),
        "batch_size": batch,
        "parameters": jax_params,
        "flops_per_step": flops,
        "steps_per_round": steps,
        "step_ms": {n: 1e3 * t for n, t in step_s.items()},
        "step_ms_rounds": {n: [1e3 * x for x in t] for n, t in times.items()},
        "images_per_sec": {n: batch / t for n, t in step_s.items()},
        "best_torch": best_torch,
        "posejax_images_per_sec": batch / step_s["posejax"],
        "torch_images_per_sec": batch / step_s[best_torch],
        "ratio": step_s[best_torch] / step_s["posejax"],
    }


def _child_rows(args, cpu_devices: str, threads: int) -> list[dict]:
    """Rows measured by a fresh interpreter presenting ``cpu_devices`` CPU devices, beside torch
    at ``threads`` threads (the device count is fixed once JAX starts, so each setting needs its
    own process; see the module docstring for why each torch thread count gets one too)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        command = [
            sys.executable,
            __file__,
            *args.overrides,  # (positional first: the list options after them end at the next flag)
            f"distributed.cpu_devices={cpu_devices}",
            "--rows-to",
            str(out),
            "--networks",
            *args.networks,
            "--steps",
            str(args.steps),
            "--rounds",
            str(args.rounds),
            "--round-seconds",
            str(args.round_seconds),
            "--torch-threads",
            str(threads),
            *(["--torch-channels-last"] if args.torch_channels_last else []),
        ]
        subprocess.run(command, check=True)
        return json.loads(out.read_text())


def headline(rows: list[dict]) -> dict[str, dict]:
    """Per network: posejax's best device setting against torch's best thread count.

    For each posejax setting the ratio that counts is the smallest over torch thread counts
    (against the fastest torch), each measured in its own process; the setting with the
    largest such ratio is the headline."""
    by_setting: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_setting.setdefault((row["network"], row["cpu_devices"]), []).append(row)
    best: dict[str, dict] = {}
    for (network, cpu_devices), pair_rows in by_setting.items():
        worst = min(pair_rows, key=lambda r: r["ratio"])
        if network not in best or worst["ratio"] > best[network]["ratio"]:
            best[network] = {
                "cpu_devices": cpu_devices,
                "torch_threads": worst["torch_threads"],
                "ratio": worst["ratio"],
            }
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round (at most)")
    # 12: the 2-device heatmap pair's ratio spread 0.90-1.02 over four runs of 5 rounds and
    # 0.98-1.01 over three of 12 (2026-12-03); its step varies from round to round.
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--round-seconds", type=float, default=2.0, help="fewer steps beyond")
    parser.add_argument("--torch-channels-last", action="store_true")
    parser.add_argument(
        "--torch-threads",
        type=int,
        nargs="*",
        default=None,
        help="torch thread counts to time (default: 1 and torch's own); the best one counts",
    )
    parser.add_argument(
        "--cpu-devices",
        nargs="*",
        default=["null", "cores"],
        help="posejax's distributed.cpu_devices settings to time, each in its own process "
        "(null: one CPU device; cores: one per core, data parallel)",
    )
    parser.add_argument("--rows-to", help=argparse.SUPPRESS)  # a child: measure, write rows
    parser.add_argument("--tag", default="", help="results go to bench_vs_torch[_TAG].json/.md")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both networks")
    args = parser.parse_args()

    if importlib.util.find_spec("torch") is None:
        print("bench_vs_torch: torch is not installed (pip install -e .[bench]); skipped")
        return 0
    import torch

    args.torch_threads = sorted(set(args.torch_threads or [1, torch.get_num_threads()]))
    if args.rows_to:
        rows = [compare(network, args.overrides, args) for network in args.networks]
        Path(args.rows_to).write_text(json.dumps(rows))
        return 0

    rows = []
    for cpu_devices in args.cpu_devices:
        for threads in args.torch_threads:
            for row in _child_rows(args, cpu_devices, threads):
                row["cpu_devices"], row["torch_threads"] = cpu_devices, threads
                rows.append(row)
                print(
                    f"{row['network']} (cpu_devices={cpu_devices}, {row['devices']} device(s); "
                    f"torch {threads} thread(s)): "
                    + ", ".join(f"{n} {v:.1f} img/s" for n, v in row["images_per_sec"].items())
                    + f"; ratio {row['ratio']:.2f}",
                    flush=True,
                )
    best = headline(rows)
    layout = "channels_last" if args.torch_channels_last else "NCHW (default)"
    table = [
        "# posejax vs PyTorch: train step on the same CPU",
        "",
        "The same network, optimizer and loss in posejax (the training loop's jitted step) and "
        f"in PyTorch {torch.__version__} (eager, {layout}); pre-read batches; one process per "
        "(posejax device setting, torch thread count) pair (`distributed.cpu_devices`: null = "
        "one CPU device using every core inside each op, cores = one device per core, data "
        f"parallel), {args.rounds} alternating rounds of up to {args.steps} steps each, order "
        "rotated every round, medians. Ratio = posejax images/s / PyTorch images/s measured in "
        "the same process." + "".join(f" {o}" for o in args.overrides),
        "",
        *markdown_table(
            [
                "network",
                "input",
                "batch",
                "params",
                "posejax devices",
                "torch threads",
                "posejax ms/step",
                "torch ms/step",
                "posejax img/s",
                "torch img/s",
                "ratio",
            ],
            [
                [
                    f"{r['network']} (`{r['formulation']}`)",
                    "x".join(map(str, r["input_size"])),
                    str(r["batch_size"]),
                    f"{r['parameters'] / 1e6:.2f}M",
                    f"{r['devices']} (`{r['cpu_devices']}`)",
                    str(r["torch_threads"]),
                    f"{r['step_ms']['posejax']:.1f}",
                    f"{r['step_ms'][r['best_torch']]:.1f}",
                    f"{r['posejax_images_per_sec']:.1f}",
                    f"{r['torch_images_per_sec']:.1f}",
                    f"{r['ratio']:.2f}",
                ]
                for r in rows
            ],
        ),
        "",
        "Headline (posejax's best device setting; within it, the pair against the fastest "
        "torch): "
        + "; ".join(
            f"{network} {h['ratio']:.2f} (cpu_devices={h['cpu_devices']}, torch "
            f"{h['torch_threads']} thread(s))"
            for network, h in best.items()
        )
        + ".",
    ]
    print(table[-1])
    write_report(
        "bench_vs_torch" + (f"_{args.tag}" if args.tag else ""),
        {
            "settings": vars(args),
            "torch": {"version": torch.__version__, "layout": layout},
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "rows": rows,
            "headline": best,
        },
        table,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
