"""E5: inference time against the number of people, top-down (one crop per person) vs bottom-up.

``python -m posejax.experiments.runtime --top-down RUN_DIR --bottom-up RUN_DIR --out DIR``

Scenes are rendered by the synthetic dataset's renderer (:func:`posejax.data.render.render_scene`)
with exactly ``P`` people placed, ``P = 1 .. --max-people``, everything else as in the ``multi``
training set (so the renderer may drop a person that ends up hidden; the table reports the mean
number actually present). Each scene goes through the runners of
:mod:`posejax.inference.runners`, built from the two runs' newest checkpoints:

* top-down: :class:`~posejax.inference.runners.TopDownRunner` on the ground-truth boxes, once
  per ``--crop-batches`` value, the number of crops per network call (the last call is padded,
  so ``1`` gives one network call per person);
* top-down with ``--detector DET_RUN``: the same runners fed by the trained person detector
  (:class:`~posejax.inference.detection.DetectThenEstimate`, boxes with a score of at least
  ``--det-score-threshold``), whose time (network + decoding) is the ``detection`` stage: what a
  top-down system costs on a photo;
* bottom-up: :class:`~posejax.inference.runners.BottomUpRunner` on the whole image.

Each scene is run ``--repeats`` times after a warm-up (compilation); a scene's time per stage is
the median of its repeats and the table reports the mean over scenes, per stage (preprocess,
network, decode, postprocess; detection) and in total, plus a least-squares line ``total = a + b *
people`` per runner. ``found_mean`` is the number of people each runner returned. Writes
``summary.csv``, ``summary.md`` and ``plot.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posejax.data import schema
from posejax.data.render import SceneConfig, render_scene
from posejax.experiments.common import command_line, metric_row
from posejax.experiments.summarize import save_figure, write_table
from posejax.inference.detection import DetectThenEstimate, load_detector
from posejax.inference.runners import STAGES, Runner, load_runner

TIMED = ("detection", *STAGES)  # a runner without a detector spends 0 on detection
METRICS = ("people_mean", "total_ms", *(f"{s}_ms" for s in TIMED), "found_mean")


def render_scenes(
    num_people: int, num_scenes: int, *, scene: SceneConfig | None = None, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``num_scenes`` scenes with exactly ``num_people`` people placed (same seed, same scenes).

    ``scene`` defaults to the ``multi`` training set's settings (``SceneConfig()``).
    """
    scene = scene or SceneConfig()
    config = dataclasses.replace(scene, min_people=num_people, max_people=num_people)
    rng = np.random.default_rng([seed, num_people])
    return [render_scene(rng, config) for _ in range(num_scenes)]


def time_runner(
    runner: Runner, scenes: Sequence[dict], *, repeats: int, gt_boxes: bool = True
) -> dict[str, float]:
    """Mean over scenes of the median seconds per stage (and in total), people found.

    With ``gt_boxes`` a runner gets the scene's ground-truth boxes (a bottom-up runner does not
    use them); without, none (a runner with a detector finds its own).
    """
    per_scene, found = [], []
    for scene in scenes:
        image = scene[schema.IMAGE]
        boxes = scene[schema.BOXES] if gt_boxes else None
        runs = []
        for _ in range(repeats):
            result = runner(image, boxes)
            runs.append([result.timing.get(s, 0.0) for s in TIMED])
        per_scene.append(np.median(np.asarray(runs), axis=0))
        found.append(len(result.poses))
    stage_seconds = np.mean(per_scene, axis=0)
    out = {f"{s}_ms": 1e3 * t for s, t in zip(TIMED, stage_seconds, strict=True)}
    out["total_ms"] = 1e3 * float(stage_seconds.sum())
    out["found_mean"] = float(np.mean(found))
    return out


def measure(
    top_down_run: str | Path,
    bottom_up_run: str | Path,
    *,
    max_people: int = 16,
    num_scenes: int = 5,
    repeats: int = 3,
    crop_batches: Sequence[int] = (1, 8),
    seed: int = 0,
    detector_run: str | Path | None = None,
    det_score_threshold: float | None = None,
) -> list[dict]:
    """One row per (runner, number of people placed); a row's ``run`` names the runner."""
    runners: dict[str, tuple[Runner, bool]] = {}  # label -> (runner, given the GT boxes)
    for crops in crop_batches:
        runner, setup, _ = load_runner(top_down_run, batch_size=crops)
        name = type(setup.formulation).__name__
        runners[f"top-down {name}, {crops} crop(s)/call"] = (runner, True)
        if detector_run is not None:
            detector = load_detector(detector_run, score_threshold=det_score_threshold)
            system = DetectThenEstimate(runner, detector)
            runners[f"top-down {name} + detector, {crops} crop(s)/call"] = (system, False)
    runner, setup, _ = load_runner(bottom_up_run)
    runners[f"bottom-up {type(setup.formulation).__name__}"] = (runner, True)
    for runner, _ in runners.values():
        runner.warmup()

    rows = []
    for people in range(1, max_people + 1):
        scenes = render_scenes(people, num_scenes, seed=seed)
        present = float(np.mean([len(s[schema.KEYPOINTS]) for s in scenes]))
        for label, (runner, gt_boxes) in runners.items():
            timed = time_runner(runner, scenes, repeats=repeats, gt_boxes=gt_boxes)
            metrics = {"people_mean": present, **timed}
            rows.append(metric_row(label, {"people": people}, metrics))
        print(f"{people:2d} people placed ({present:.1f} present) done", flush=True)
    return rows


def linear_fits(rows: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """Per runner, ``(intercept ms, slope ms per person)`` of total time against people present."""
    fits = {}
    for label in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == label]
        x = [r["metrics"]["people_mean"] for r in mine]
        y = [r["metrics"]["total_ms"] for r in mine]
        slope, intercept = np.polyfit(x, y, 1)
        fits[label] = (float(intercept), float(slope))
    return fits


def plot_runtime(rows: Sequence[dict], out_path: str | Path) -> Path:
    """Total time (left) and network / decode time (right) against the people present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for i, label in enumerate(dict.fromkeys(r["run"] for r in rows)):
        mine = [r["metrics"] for r in rows if r["run"] == label]
        x = [m["people_mean"] for m in mine]
        left.plot(x, [m["total_ms"] for m in mine], marker="o", ms=3, color=f"C{i}", label=label)
        right.plot(x, [m["network_ms"] for m in mine], color=f"C{i}", label=f"{label}: network")
        right.plot(x, [m["decode_ms"] for m in mine], "--", color=f"C{i}", label=f"{label}: decode")
        if any(m["detection_ms"] > 0 for m in mine):
            detection = [m["detection_ms"] for m in mine]
            right.plot(x, detection, ":", color=f"C{i}", label=f"{label}: detection")
    left.set_ylabel("ms / image (total)")
    right.set_ylabel("ms / image")
    for ax in (left, right):
        ax.set_xlabel("people in the image")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=6)
    return save_figure(fig, out_path)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-down", required=True, help="run dir of a top-down formulation")
    parser.add_argument("--bottom-up", required=True, help="run dir of a bottom-up formulation")
    parser.add_argument("--out", required=True, help="folder for summary.csv/md and plot.png")
    parser.add_argument("--max-people", type=int, default=16)
    parser.add_argument("--scenes", type=int, default=5, help="scenes per number of people")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per scene")
    parser.add_argument("--crop-batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--detector", default=None, help="also time the top-down run on this detector's boxes"
    )
    parser.add_argument(
        "--det-score-threshold", type=float, default=None, help="default: the detector run's"
    )
    parser.add_argument("--title", default="E5: runtime vs number of people")
    args = parser.parse_args(argv)
    rows = measure(
        args.top_down,
        args.bottom_up,
        max_people=args.max_people,
        num_scenes=args.scenes,
        repeats=args.repeats,
        crop_batches=args.crop_batches,
        seed=args.seed,
        detector_run=args.detector,
        det_score_threshold=args.det_score_threshold,
    )
    command = command_line("posejax.experiments.runtime", argv)
    _, md_path = write_table(
        rows,
        args.out,
        metrics=METRICS,
        source=f"{args.top_down} (top-down), {args.bottom_up} (bottom-up)",
        command=command,
        title=args.title,
    )
    lines = ["", "Least-squares line of the total time against the people present:", ""]
    lines += [
        f"- {label}: {intercept:.2f} ms + {slope:.2f} ms/person"
        for label, (intercept, slope) in linear_fits(rows).items()
    ]
    with md_path.open("a") as f:
        f.write("\n".join(lines) + "\n")
    plot_runtime(rows, Path(args.out) / "plot.png")
    print(md_path.read_text())
    return rows


if __name__ == "__main__":
    main()
