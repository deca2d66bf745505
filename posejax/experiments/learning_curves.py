"""Learning curves of training runs: validation metrics against steps and against wall time.

``python -m posejax.experiments.learning_curves RUN_DIR [RUN_DIR ...] --out DIR``

Reads each run's ``metrics.jsonl`` (the rows with ``val/...`` keys, written at every
``trainer.eval_every`` steps on ``trainer.eval_images`` validation images, and at the last step
on ``trainer.final_eval_images``) and writes ``DIR/learning_curves.png`` (one column per metric,
top row against training steps, bottom row against training wall time, evaluation excluded)
and ``DIR/learning_curves.csv`` (one line per run and evaluation). A run directory's label is
its folder name; a folder without ``metrics.jsonl`` is an error naming it.

They answer the question a result table cannot: whether a formulation is still learning when
its budget ends (budget-limited), has flattened far below its oracle (model- or data-limited), or
never moved off the mean pose (a defect).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

from posejax.experiments.summarize import save_figure
from posejax.train.metrics_writer import read_metrics

DEFAULT_METRICS = ("OKS_AP", "PCK@0.2")


def read_curve(run_dir: str | Path) -> list[dict]:
    """The evaluation rows of one run: ``step``, ``train_seconds`` and the ``val/`` metrics
    (prefix stripped), in step order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a posejax run directory?")
    rows = []
    for row in read_metrics(run_dir):
        metrics = {k[4:]: v for k, v in row.items() if k.startswith("val/")}
        if metrics:
            rows.append({"step": row["step"], "train_seconds": row.get("train_seconds"), **metrics})
    return sorted(rows, key=lambda r: r["step"])


def write_learning_curves(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> tuple[Path, Path]:
    """Plot and tabulate the curves of ``run_dirs``; returns ``(png, csv)`` paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [Path(d).name for d in run_dirs]
    curves = {label: read_curve(d) for label, d in zip(labels, run_dirs, strict=True)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "learning_curves.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "train_seconds", *metrics])
        for label, rows in curves.items():
            for r in rows:
                writer.writerow(
                    [label, r["step"], r["train_seconds"], *[r.get(m) for m in metrics]]
                )

    fig, axes = plt.subplots(
        2, len(metrics), figsize=(4.2 * len(metrics), 6.4), dpi=120, squeeze=False
    )
    for col, metric in enumerate(metrics):
        for row, x_key in enumerate(("step", "train_seconds")):
            ax = axes[row, col]
            for label, rows in curves.items():
                points = [
                    (r[x_key] / (60.0 if x_key == "train_seconds" else 1.0), r[metric])
                    for r in rows
                    if r.get(metric) is not None and r.get(x_key) is not None
                ]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", ms=3, label=label)
            ax.set_xlabel("training steps" if x_key == "step" else "training minutes")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    png_path = save_figure(fig, out_dir / "learning_curves.png")
    return png_path, csv_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--labels", nargs="+", default=None, help="one label per run directory")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.run_dirs):
        parser.error(f"--labels: {len(args.labels)} labels for {len(args.run_dirs)} run dirs")
    png, table = write_learning_curves(
        args.run_dirs, args.out, metrics=args.metrics, labels=args.labels, title=args.title
    )
    print(f"wrote {png} and {table}")


if __name__ == "__main__":
    main()
