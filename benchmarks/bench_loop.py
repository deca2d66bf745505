"""The training loop's images/s against its own train step, for every quick preset.

What a training run gets (``metrics.jsonl``'s ``images_per_sec``) is the train step plus
everything the loop does around it: make the next batch (``ReadAhead``: decode, augment, warp,
collate in a low-priority thread), dispatch, sum the metrics, write the log rows. For each
formulation's quick preset (E1: ``conf/experiment/e1_quick*.yaml``) this script measures, in
the same minutes:

* **pipeline**: ``next(iterator)`` of the preset's training pipeline alone;
* **step**: the compiled train step on batches read beforehand (as ``bench_train.py``), once
  before and once after the loop run, in one child process that waits idle in between;
* **loop**: ``python -m posejax.train`` on the preset, with ``trainer.log_every`` set so each
  ``metrics.jsonl`` row covers about ``--window-seconds`` of training; the median over the rows
  after the first (which holds the compilation and the first batch).

The ratio is the loop's median over the mean of the two step rates. Goal (project issue 11):
loop >= 0.9 x step for every preset. Evaluation and checkpointing happen only at the last step,
after the timed rows, and outside the rows' clocks in any case (the loop restarts its clock
after an evaluation).

Run:  .venv/bin/python benchmarks/bench_loop.py [--presets regression heatmap ...] [overrides...]
(writes benchmarks/results/bench_loop.json and .md; Hydra overrides apply to every preset, after
it, in the step benchmark and the training run alike)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    RESULTS,
    ROOT,
    close_iterator,
    data_dir_override,
    markdown_table,
    write_report,
)

GOAL = 0.9
MARK = "@bench_loop@ "  # starts the child's report lines (datasets print to stdout too)
# formulation -> its quick preset (the E1 rows of `make compare`)
PRESETS = {
    "regression": "e1_quick",
    "heatmap": "e1_quick",
    "segmentation": "e1_quick",
    "paf_quick": "e1_quick_paf",
    "detector": "e1_quick_detector",
}


def _step_child(formulation: str, experiment: str, batches: int, overrides: list[str]) -> None:
    """Child process: pipeline and step rates, printed as a JSON line; then waits for a line on
    stdin and prints the step rate again (the same compiled step, the same process)."""
    from bench_pipeline import pipeline_rate
    from bench_train import build_trainer, measure_training

    trainer = build_trainer(formulation, [f"experiment={experiment}", *overrides])
    iterator = trainer.iterator()
    try:
        pipe = pipeline_rate(iterator, trainer.batch_size, batches)
    finally:
        close_iterator(iterator)
    step = measure_training(trainer, steps=batches, rounds=3)
    devices = trainer.program.batch_sharding.mesh.size
    first = {"pipeline": pipe, "step": step["images_per_sec"], "devices": devices}
    print(MARK + json.dumps(first | {"batch_size": trainer.batch_size}), flush=True)
    sys.stdin.readline()
    again = measure_training(trainer, steps=batches, rounds=3)
    print(MARK + json.dumps({"step": again["images_per_sec"]}), flush=True)


def _read_report(child) -> dict | None:
    """The child's next report; other output (a dataset build's progress) goes to stderr."""
    for line in child.stdout:
        if MARK in line:
            before, report = line.split(MARK, 1)
            sys.stderr.write(before)
            return json.loads(report)
        sys.stderr.write(line)
    return None  # the child exited without reporting


def _loop_rates(
    formulation: str, experiment: str, window: int, windows: int, overrides: list[str]
) -> list[float]:
    """``metrics.jsonl`` images/s of a ``python -m posejax.train`` run of ``windows`` rows of
    ``window`` steps, the first row dropped."""
    steps = window * windows
    with tempfile.TemporaryDirectory(prefix="bench_loop_") as run_dir:
        command = [
            sys.executable,
            "-m",
            "posejax.train",
            f"experiment={experiment}",
            f"formulation={formulation}",
            f"trainer.steps={steps}",
            f"trainer.log_every={window}",
            f"trainer.eval_every={steps}",
            f"trainer.checkpoint_every={steps}",
            "trainer.eval_images=16",
            "trainer.final_eval_images=16",
            "trainer.progress=false",
            f"hydra.run.dir={run_dir}",
            *data_dir_override(),
            *overrides,
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(
                f"training run failed ({' '.join(command[3:])}):\n{done.stderr[-3000:]}"
            )
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").open()]
    rates = [row["images_per_sec"] for row in rows if "images_per_sec" in row]
    if len(rates) != windows:
        raise RuntimeError(f"expected {windows} metrics rows, got {len(rates)}")
    return rates[1:]


def measure(formulation: str, experiment: str, args) -> dict:
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", formulation, experiment, str(args.batches)]
        + args.overrides,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = _read_report(child)
        if before is None:
            raise RuntimeError(f"the step benchmark of {formulation} failed (see above)")
        batch = before["batch_size"]
        window = max(5, round(args.window_seconds * before["step"] / batch))
        loop = _loop_rates(formulation, experiment, window, args.windows + 1, args.overrides)
        child.stdin.write("again\n")
        child.stdin.flush()
        after = _read_report(child)
        if after is None:
            raise RuntimeError(f"the second step benchmark of {formulation} failed (see above)")
        child.wait(timeout=120)
    finally:
        if child.poll() is None:  # an error above: do not leave it waiting
            child.kill()
            child.wait()
    step = (before["step"] + after["step"]) / 2
    loop_median = statistics.median(loop)
    return {
        "formulation": formulation,
        "experiment": experiment,
        "batch_size": batch,
        "devices": before["devices"],
        "pipeline_images_per_sec": before["pipeline"],
        "step_images_per_sec_before": before["step"],
        "step_images_per_sec_after": after["step"],
        "loop_window_steps": window,
        "loop_images_per_sec_rows": loop,
        "loop_images_per_sec": loop_median,
        "loop_over_step": loop_median / step,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        formulation, experiment, batches, *overrides = sys.argv[2:]
        _step_child(formulation, experiment, int(batches), overrides)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batches", type=int, default=20, help="batches per pipeline/step round")
    parser.add_argument("--windows", type=int, default=5, help="timed metrics rows per loop run")
    parser.add_argument("--window-seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every preset")
    args = parser.parse_args()

    rows = []
    for formulation in args.presets:
        row = measure(formulation, PRESETS[formulation], args)
        rows.append(row)
        print(
            f"{formulation}: loop {row['loop_images_per_sec']:.0f} img/s, step "
            f"{row['step_images_per_sec_before']:.0f} / {row['step_images_per_sec_after']:.0f}, "
            f"ratio {row['loop_over_step']:.2f}",
            flush=True,
        )

    table = [
        "# The training loop against its train step",
        "",
        "Each formulation's quick preset (`experiment=...`): `python -m posejax.train` images/s "
        f"(median of {args.windows} `metrics.jsonl` rows of ~{args.window_seconds:g} s, the "
        "first row dropped)"
        + "".join(f" {o}" for o in args.overrides)
        + " against the compiled step on pre-read batches, measured just "
        "before and just after the run (bench_train's method), and the input pipeline alone. "
        f"Goal: loop >= {GOAL} x step.",
        "",
        *markdown_table(
            [
                "formulation",
                "preset",
                "devices",
                "batch",
                "pipeline img/s",
                "step img/s (before / after)",
                "loop img/s",
                "loop / step",
                "goal met",
            ],
            [
                [
                    r["formulation"],
                    r["experiment"],
                    str(r["devices"]),
                    str(r["batch_size"]),
                    f"{r['pipeline_images_per_sec']:.0f}",
                    f"{r['step_images_per_sec_before']:.0f} / {r['step_images_per_sec_after']:.0f}",
                    f"{r['loop_images_per_sec']:.0f}",
                    f"{r['loop_over_step']:.2f}",
                    "yes" if r["loop_over_step"] >= GOAL else "no",
                ]
                for r in rows
            ],
        ),
    ]
    report = {"settings": vars(args), "goal": GOAL, "rows": rows}
    write_report("bench_loop", report, table, out=args.out)


if __name__ == "__main__":
    main()
