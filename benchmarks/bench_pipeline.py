"""Input pipeline throughput against training throughput, per formulation.

Three rates in images per second, each on the default config (``data=synthetic`` multi,
``backbone=small``, default batch size and the default worker settings of ``conf/data``):

* **pipeline**: ``next(iterator)`` alone, the grain training pipeline of the loop (shuffle,
  augment, warp, collate), nothing else running;
* **train step**: the compiled train step on batches read beforehand (as ``bench_train.py``);
* **end to end**: both interleaved as ``posejax.train.loop`` does (dispatch the step while the
  next batches are made ahead in a low-priority thread, ``ReadAhead``): what a training run
  gets.

Goal (project issue): pipeline >= 1.5 x train step, so that the input never limits training.

Run:  .venv/bin/python benchmarks/bench_pipeline.py [--formulations ...] [overrides...]
(writes benchmarks/results/bench_pipeline.json and .md)
"""

from __future__ import annotations

import argparse
import time

import jax
from bench_train import build_trainer, measure_training
from common import formulations, markdown_table, split_overrides, write_report

from posejax.data.pipeline import ReadAhead

GOAL = 1.5


def pipeline_rate(iterator, batch_size: int, batches: int) -> float:
    next(iterator)  # warm-up (worker start-up, first decode)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def end_to_end_rate(trainer, iterator, steps: int) -> float:
    rng = jax.random.key(0)
    state = trainer.state
    batch = next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = trainer.compiled_step(state, trainer.shard(batch), rng)
        batch = next(iterator)  # made while the step runs, as in the training loop
    jax.block_until_ready((state, metrics))
    trainer.state = state
    return steps * trainer.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formulations", nargs="*", default=None)
    parser.add_argument("--batches", type=int, default=20, help="batches timed per rate")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every formulation")
    args = parser.parse_args()
    split_overrides(args)

    rows = []
    for name in args.formulations or formulations():
        trainer = build_trainer(name, args.overrides)
        pipeline = trainer.setup.data.pipeline
        iterator = trainer.iterator()
        pipe = pipeline_rate(iterator, trainer.batch_size, args.batches)
        train = measure_training(trainer, steps=args.batches, rounds=2)
        # As many steps as bench_train times in one round: a few seconds, at least 2 steps.
        ahead = ReadAhead(iterator)
        try:
            both = end_to_end_rate(trainer, ahead, train["steps_per_round"])
        finally:
            ahead.close()  # closes the grain iterator (and its workers) too
        rows.append(
            {
                "formulation": name,
                "mode": pipeline.mode,
                "input_size": list(pipeline.input_size),
                "batch_size": trainer.batch_size,
                "num_workers": pipeline.num_workers,
                "read_threads": pipeline.read_threads,
                "pipeline_images_per_sec": pipe,
                "train_images_per_sec": train["images_per_sec"],
                "end_to_end_images_per_sec": both,
                "pipeline_over_train": pipe / train["images_per_sec"],
            }
        )
        print(f"{name}: pipeline {pipe:.0f} img/s, train {train['images_per_sec']:.0f} img/s")

    table = [
        "# Input pipeline vs training throughput",
        "",
        "Default config"
        + "".join(f" {o}" for o in args.overrides)
        + "; images/s of the pipeline over "
        f"{args.batches} batches, of the train step on pre-read batches and of both together "
        f"as in the training loop (up to {args.batches} steps, fewer for slow steps). Both "
        "share this machine's cores, so the end-to-end rate is below either. "
        f"Goal: pipeline >= {GOAL} x train step.",
        "",
        *markdown_table(
            [
                "formulation",
                "input",
                "batch",
                "workers",
                "pipeline img/s",
                "train img/s",
                "end-to-end img/s",
                "pipeline / train",
                "goal met",
            ],
            [
                [
                    r["formulation"],
                    "x".join(map(str, r["input_size"])),
                    str(r["batch_size"]),
                    str(r["num_workers"]),
                    f"{r['pipeline_images_per_sec']:.0f}",
                    f"{r['train_images_per_sec']:.0f}",
                    f"{r['end_to_end_images_per_sec']:.0f}",
                    f"{r['pipeline_over_train']:.2f}",
                    "yes" if r["pipeline_over_train"] >= GOAL else "no",
                ]
                for r in rows
            ],
        ),
    ]
    write_report("bench_pipeline", {"settings": vars(args), "goal": GOAL, "rows": rows}, table)


if __name__ == "__main__":
    main()
