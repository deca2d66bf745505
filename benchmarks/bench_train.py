"""Training throughput per formulation, and the fraction of the machine's peak it reaches.

For each formulation on the default config (``backbone=small``, ``data=synthetic`` multi, the
default ``trainer.batch_size``) the script takes the training loop's own train step
(``posejax.train.program.build_program``: same jit, shardings and donation, through
``benchmarks/common.py``), feeds it batches that were read beforehand (so the input pipeline is
not measured here: see ``bench_pipeline.py``) and reports:

* images per second (median over ``--rounds`` rounds of ``--steps`` steps);
* model FLOPs per step from XLA's cost analysis of the compiled step
  (``jit(step).lower(...).compile().cost_analysis()["flops"]``: forward, backward, target
  encoding and optimizer update) divided by the step time;
* that rate over a measured dense-matmul peak on the same device (the best time of a jitted
  2048 x 2048 float32 matmul): how much of what the hardware can do the model uses.

Run:  .venv/bin/python benchmarks/bench_train.py [--formulations heatmap paf] [overrides...]
(writes benchmarks/results/bench_train.json and .md)
"""

from __future__ import annotations

import argparse
import time

import jax
from common import (
    Trainer,
    compose_config,
    data_dir_override,
    formulations,
    markdown_table,
    matmul_peak_flops,
    median,
    split_overrides,
    write_report,
)


def build_trainer(formulation: str, overrides=()) -> Trainer:
    return Trainer(compose_config([f"formulation={formulation}", *data_dir_override(), *overrides]))


def measure_training(
    trainer: Trainer, *, steps: int, rounds: int, round_seconds: float = 2.0
) -> dict:
    """Images/s and FLOP/s of a train step on pre-read batches (``trainer.state`` advances).

    Each round times ``steps`` steps, or fewer (at least 2) when that would take longer than
    ``round_seconds``, so slow models still finish in seconds.
    """
    iterator = trainer.iterator()
    batches = [trainer.shard(next(iterator)) for _ in range(4)]
    rng = jax.random.key(0)
    state = trainer.state

    flops = trainer.step_flops()  # compiles the step
    step = trainer.compiled_step

    def run(n):
        nonlocal state
        for i in range(n):
            state, metrics = step(state, batches[i % len(batches)], rng)
        jax.block_until_ready((state, metrics))

    run(1)  # warm-up
    start = time.perf_counter()
    run(1)
    steps = max(2, min(steps, int(round_seconds / (time.perf_counter() - start))))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - start) / steps)
    trainer.state = state
    step_s = median(times)
    return {
        "batch_size": trainer.batch_size,
        "input_size": list(trainer.setup.data.pipeline.input_size),
        "mode": trainer.setup.data.pipeline.mode,
        "step_ms": 1e3 * step_s,
        "step_ms_rounds": [1e3 * t for t in times],
        "steps_per_round": steps,
        "images_per_sec": trainer.batch_size / step_s,
        "flops_per_step": flops,
        "achieved_flops_per_sec": flops / step_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formulations", nargs="*", default=None)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round (at most)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-seconds", type=float, default=2.0, help="fewer steps beyond")
    parser.add_argument("--tag", default="", help="results go to bench_train[_TAG].json/.md")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every formulation")
    args = parser.parse_args()
    split_overrides(args)

    rows = []
    for name in args.formulations or formulations():
        trainer = build_trainer(name, args.overrides)
        row = {
            "formulation": name,
            **measure_training(trainer, steps=args.steps, rounds=args.rounds),
        }
        rows.append(row)
        print(f"{name}: {row['images_per_sec']:.1f} img/s", flush=True)
    # The peak is measured after the steps: run first, the matmul (a YNNPACK dot on XLA:CPU,
    # jaxlib 0.10.2) left every convolution step of the process ~30 % slower (heatmap 96x72:
    # 179-182 against 256-264 images/s, 2026-12-02). The machine may be shared: the best of
    # two measurements is its peak.
    peaks = [matmul_peak_flops(), matmul_peak_flops()]
    peak = max(peaks)
    for row in rows:
        row["fraction_of_peak"] = row["achieved_flops_per_sec"] / peak

    table = [
        "# Training throughput per formulation",
        "",
        "Default config (backbone=small, data=synthetic multi)"
        + "".join(f" {o}" for o in args.overrides)
        + "; "
        f"batches read beforehand; median of {args.rounds} rounds of up to {args.steps} steps "
        f"(fewer for slow steps: {args.round_seconds} s per round). "
        f"Peak: dense float32 2048x2048 matmul, {peak / 1e9:.1f} GFLOP/s measured on the same "
        "device after the steps (best of two). "
        "FLOPs per step: XLA cost analysis of the compiled train step.",
        "",
        *markdown_table(
            [
                "formulation",
                "input",
                "batch",
                "ms/step",
                "images/s",
                "GFLOP/step",
                "GFLOP/s",
                "of peak",
            ],
            [
                [
                    r["formulation"],
                    "x".join(map(str, r["input_size"])),
                    str(r["batch_size"]),
                    f"{r['step_ms']:.1f}",
                    f"{r['images_per_sec']:.1f}",
                    f"{r['flops_per_step'] / 1e9:.2f}",
                    f"{r['achieved_flops_per_sec'] / 1e9:.1f}",
                    f"{r['fraction_of_peak']:.1%}",
                ]
                for r in rows
            ],
        ),
    ]
    write_report(
        "bench_train" + (f"_{args.tag}" if args.tag else ""),
        {
            "settings": vars(args),
            "matmul_peak_flops_per_sec": peak,
            "matmul_peak_measurements": peaks,
            "rows": rows,
        },
        table,
    )


if __name__ == "__main__":
    main()
