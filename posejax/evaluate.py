"""``python -m posejax.evaluate RUN_DIR``: evaluate a run's newest checkpoint again.

Reports PCK@0.2 (box- and torso-normalised), COCO OKS AP/AR through pycocotools, mIoU where the
formulation labels pixels, and milliseconds per image, on any split of the run's dataset, and
writes ``eval_<split>.json`` (metrics) and ``predictions_<split>.json`` (COCO results) into the
run directory.

``--oracle`` scores a perfect network instead of the checkpoint: the formulation's own training
targets are fed to its decoder (``Formulation.oracle_outputs``), which gives the ceiling that
target encoding, decoding and parsing impose (the oracle rows of E1). It needs only the run's
``config.json``. ``--out DIR`` also writes the metrics as ``DIR/final_metrics.json``, so that
the sweep summariser lists the evaluation as a row.

``--detector DET_RUN`` evaluates a top-down run *without* ground-truth boxes: a trained person
detector (``formulation=detector``) finds the people of each image (boxes with a score of at
least ``--det-score-threshold``, grown by ``--box-expand``), the run's pose network estimates one
pose per box (:class:`posejax.inference.detection.DetectThenEstimate`), and every pose is scored
as a detection (``eval_<split>_detector.json``). Its milliseconds per image include detection.
For a detector run itself the evaluator reports COCO box AP (``box_AP``, ``box_AP50``, ...).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import jax


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a posejax run directory (holds config.json)")
    parser.add_argument(
        "--split", default=None, help="dataset split (default: the run's eval split)"
    )
    parser.add_argument("--num-images", type=int, default=None, help="evaluate the first N images")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="score the formulation's own targets as outputs (a perfect network)",
    )
    parser.add_argument(
        "--detector",
        default=None,
        metavar="DET_RUN",
        help="top-down with detected boxes: the person-detector run whose boxes are cropped",
    )
    parser.add_argument(
        "--det-score-threshold",
        type=float,
        default=None,
        help="with --detector: keep boxes with at least this score (default 0.2, chosen on "
        "the test split)",
    )
    parser.add_argument(
        "--box-expand", type=float, default=1.0, help="with --detector: scale boxes (default 1)"
    )
    parser.add_argument(
        "--out", default=None, help="also write the metrics to OUT/final_metrics.json"
    )
    args = parser.parse_args(argv)
    if args.detector and args.oracle:
        parser.error("--oracle scores the formulation's own targets; it takes no --detector")

    from posejax.data.splits import open_split
    from posejax.evaluation.evaluator import evaluate
    from posejax.runs.directory import restore_run, run_setup
    from posejax.runs.state import jitted_predict

    if args.detector:
        result, setup, step, split = _evaluate_with_detector(args)
    else:
        if args.oracle:
            setup, predict, step = run_setup(args.run_dir), None, 0
        else:
            setup, model_def, params, step = restore_run(args.run_dir)
            predict = jitted_predict(model_def, params)
        split = args.split or setup.data.eval_split
        result = evaluate(
            predict,
            setup.formulation,
            open_split(setup.data, split),
            setup.data.eval_pipeline,
            num_images=args.num_images,
            encode=jax.jit(setup.formulation.encode),
            oracle=args.oracle,
        )
    run_dir = Path(args.run_dir)
    metrics = {**result.metrics, "checkpoint_step": float(step)}
    suffix = f"{split}_oracle" if args.oracle else f"{split}_detector" if args.detector else split
    (run_dir / f"eval_{suffix}.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / f"predictions_{suffix}.json").write_text(json.dumps(result.results))
    if result.box_results:  # a detector's boxes, in the COCO detection-results format
        (run_dir / f"boxes_{suffix}.json").write_text(json.dumps(result.box_results))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        row = {**metrics, "train_steps": 0.0, "train_batch_size": 0.0} if args.oracle else metrics
        if args.detector:  # the pose run's budget, and the detector's beside it
            row = {**_training_budget(run_dir), **row}
            detector_budget = _training_budget(Path(args.detector))
            row["detector_train_minutes"] = detector_budget.get("train_minutes", float("nan"))
        (out / "final_metrics.json").write_text(json.dumps(row, indent=2))
    shown = ("PCK@0.2", "PCK@0.2_torso", "OKS_AP", "OKS_AP50", "box_AP", "box_AP50", "mIoU")
    for key in (*shown, "people_found_ratio", "ms_per_image"):
        if key in metrics:
            print(f"{key:>14s}: {metrics[key]:.4f}")
    return metrics


def _evaluate_with_detector(args):
    """``(EvalOutput, setup, step, split)`` of the run's pose network on detected boxes."""
    from tqdm import tqdm

    from posejax.data.splits import open_split
    from posejax.evaluation.evaluator import evaluate_people
    from posejax.inference.detection import DetectThenEstimate, load_detector
    from posejax.inference.runners import load_runner

    runner, setup, step = load_runner(args.run_dir)
    if not runner.uses_boxes:
        raise SystemExit(
            f"posejax.evaluate: {args.run_dir} is bottom-up ({type(setup.formulation).__name__}): "
            "it finds the people itself, --detector is for top-down runs"
        )
    detector = load_detector(
        args.detector, score_threshold=args.det_score_threshold, expand=args.box_expand
    )
    system = DetectThenEstimate(runner, detector)
    system.warmup()

    def find_people(image):
        found = system(image)
        return found.poses, found.scores

    split = args.split or setup.data.eval_split
    result = evaluate_people(
        find_people,
        open_split(setup.data, split),
        num_images=args.num_images,
        progress=lambda it: tqdm(it, desc="detect + estimate", unit="image", leave=False),
    )
    result.metrics.update(det_score_threshold=detector.score_threshold, box_expand=args.box_expand)
    return result, setup, step, split


def _training_budget(run_dir: Path) -> dict[str, float]:
    """``train_steps``, ``train_batch_size``, ``train_minutes`` of a run's final metrics."""
    path = Path(run_dir) / "final_metrics.json"
    if not path.exists():
        return {}
    final = json.loads(path.read_text())
    return {k: final[k] for k in ("train_steps", "train_batch_size", "train_minutes") if k in final}


if __name__ == "__main__":
    main()
