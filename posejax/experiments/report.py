"""One report per comparison: ``python -m posejax.experiments.report RUNS_DIR --out DIR``.

Writes ``DIR/report.md`` (relative links, so it renders on a code host) from a comparison's run
folder (``make compare``: ``results/quick/runs``) and the files the comparison already wrote
into ``DIR`` (``summary.md``, ``plot.png``, ``learning_curves.png``):

* the table of every row (the summariser's, :func:`posejax.experiments.summarize.collect`);
* accuracy against time per image (``plot.png``) and the learning curves;
* PCK@0.2 per joint of every keypoint row (``DIR/report/per_joint_pck.png`` and a table);
* one picture grid, ``DIR/report/predictions.jpg``: the same first validation images through
  every trained run, drawn on the original image enlarged by an integer factor (nearest
  neighbour, at least 256 px on the short side, the skeleton drawn at that size so it stays
  sharp): the ground truth in green, the prediction in the limb colours, a detector's boxes in
  yellow. Top-down runs crop the ground-truth boxes, and once more the detector's boxes when a
  detector run is given (``--detector``); bottom-up runs read the whole image. Each cell is
  captioned with the run and the people it found (score of at least the formulation's
  ``people_threshold``) / the people present.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from posejax import skeleton
from posejax.data.splits import open_split
from posejax.experiments.summarize import collect, format_value, save_figure, table
from posejax.inference.detection import DetectThenEstimate, load_detector
from posejax.inference.draw import draw_prediction, grid
from posejax.inference.runners import load_runner
from posejax.runs.directory import run_setup


def systems(runs_dir: Path, detector_run: Path | None) -> dict[str, object]:
    """Label -> runner for every trained run under ``runs_dir`` (and ``+detector`` systems)."""
    out = {}
    detector = load_detector(detector_run) if detector_run else None
    for checkpoints in sorted(runs_dir.glob("*/checkpoints")):
        run = checkpoints.parent
        runner, _, _ = load_runner(run)
        out[run.name] = runner
        if detector is not None and runner.uses_boxes:
            out[f"{run.name}+detector"] = DetectThenEstimate(runner, detector)
    return out


def prediction_grid(runs_dir: Path, out_path: Path, *, detector_run=None, num_images=4) -> Path:
    """Rows: the first ``num_images`` validation images; columns: the runs."""
    found = systems(runs_dir, detector_run)
    if not found:
        raise FileNotFoundError(f"no trained runs (*/checkpoints) under {runs_dir}")
    data = run_setup(next(iter(sorted(runs_dir.glob("*/checkpoints")))).parent).data
    source = open_split(data, data.eval_split)
    cells = []
    for i in range(num_images):
        example = source[i]
        image = np.asarray(example["image"])
        keep = ~np.asarray(example["ignore"], bool)
        gt = np.asarray(example["keypoints"], np.float64)[keep]
        gt_boxes = np.asarray(example["boxes"], np.float64)[keep]
        present = int((gt[..., 2] > 0).any(axis=1).sum())
        for label, runner in found.items():
            detects = isinstance(runner, DetectThenEstimate)
            result = runner(image) if detects else runner(image, gt_boxes)
            result = people_only(result, runner.formulation.people_threshold)
            caption = f"{label}: {len(result.scores)} / {present}"
            cells.append(
                draw_prediction(
                    image,
                    gt,
                    result.poses,
                    caption=caption,
                    boxes=result.boxes,
                    box_scores=result.box_scores,
                )
            )
    picture = grid(cells, columns=len(found))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # JPEG: a grid of textured images is several MB as PNG (quality 92 keeps lines readable).
    cv2.imwrite(str(out_path), picture[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out_path


def people_only(result, threshold: float):
    """The people of a runner's result with a score of at least ``threshold`` (what the
    formulation counts as found, e.g. a detector's boxes above its person threshold)."""
    keep = np.asarray(result.scores) >= threshold
    if keep.all():
        return result
    boxes = None if result.boxes is None else result.boxes[keep]
    box_scores = None if result.box_scores is None else result.box_scores[keep]
    return dataclasses.replace(
        result,
        poses=result.poses[keep],
        scores=result.scores[keep],
        boxes=boxes,
        box_scores=box_scores,
    )


def per_joint_pck(rows: Sequence[dict], out_path: Path) -> tuple[Path, list[str]]:
    """Bar chart and markdown table of PCK@0.2 per joint, one series per keypoint row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = skeleton.COCO_KEYPOINTS
    series = {
        r["run"]: [r["metrics"].get(f"PCK@0.2/{n}") for n in names]
        for r in rows
        if all(r["metrics"].get(f"PCK@0.2/{n}") is not None for n in names)
    }
    fig, ax = plt.subplots(figsize=(11, 3.8), dpi=120)
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(names)) + i * width, values, width, label=label)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.set_ylabel("PCK@0.2")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    save_figure(fig, out_path)
    lines = ["| run | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [
        f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |"
        for label, values in series.items()
    ]
    return out_path, lines


def _md_table(header, body) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return lines + ["| " + " | ".join(format_value(v) for v in row) + " |" for row in body]


def write_report(
    runs_dir: str | Path,
    out_dir: str | Path,
    *,
    metrics: Sequence[str],
    detector_run: str | Path | None = None,
    num_images: int = 4,
    title: str = "Comparison report",
    command: str | None = None,
) -> Path:
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    rows = collect(runs_dir)
    header, body = table(rows, metrics)
    assets = out_dir / "report"
    grid_path = prediction_grid(
        runs_dir, assets / "predictions.jpg", detector_run=detector_run, num_images=num_images
    )
    pck_path, pck_lines = per_joint_pck(rows, assets / "per_joint_pck.png")

    def link(path: Path) -> str:
        return os.path.relpath(path, out_dir).replace(os.sep, "/")

    lines = [f"# {title}", "", f"- date: {dt.date.today().isoformat()}"]
    if command:
        lines.append(f"- command: `{command}`")
    lines += ["", "## Table", "", *_md_table(header, body), ""]
    for name, caption in (
        ("plot.png", "## Accuracy against time per image"),
        ("learning_curves.png", "## Learning curves (validation, during training)"),
    ):
        if (out_dir / name).exists():
            lines += [caption, "", f"![{name}]({name})", ""]
    lines += [
        "## PCK@0.2 per joint",
        "",
        f"![per-joint PCK]({link(pck_path)})",
        "",
        *pck_lines,
        "",
        "## Predictions on the same validation images",
        "",
        "Green: ground truth; coloured skeleton: prediction (keypoints with a score above 0.1);"
        " yellow: the detector's boxes with their scores. Caption: run, people returned /"
        " people present. Top-down runs crop the ground-truth boxes, `+detector` columns the"
        " detector's.",
        "",
        f"![predictions]({link(grid_path)})",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", help="the comparison's run folder (e.g. results/quick/runs)")
    parser.add_argument("--out", required=True, help="folder of summary.md, plot.png, ...")
    parser.add_argument("--detector", default=None, help="detector run for +detector columns")
    parser.add_argument("--images", type=int, default=4, help="validation images in the grid")
    parser.add_argument("--metrics", nargs="+", default=["OKS_AP", "PCK@0.2", "ms_per_image"])
    parser.add_argument("--title", default="Comparison report")
    parser.add_argument("--command", default=None)
    args = parser.parse_args(argv)
    path = write_report(
        args.runs_dir,
        args.out,
        metrics=args.metrics,
        detector_run=args.detector,
        num_images=args.images,
        title=args.title,
        command=args.command,
    )
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
