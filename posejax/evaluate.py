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
        "--out", default=None, help="also write the metrics to OUT/final_metrics.json"
    )
    args = parser.parse_args(argv)

    from posejax.data.splits import open_split
    from posejax.evaluation.evaluator import evaluate
    from posejax.runs.directory import restore_run, run_setup
    from posejax.runs.state import jitted_predict

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
    suffix = f"{split}_oracle" if args.oracle else split
    (run_dir / f"eval_{suffix}.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / f"predictions_{suffix}.json").write_text(json.dumps(result.results))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        row = {**metrics, "train_steps": 0.0, "train_batch_size": 0.0} if args.oracle else metrics
        (out / "final_metrics.json").write_text(json.dumps(row, indent=2))
    for key in ("PCK@0.2", "PCK@0.2_torso", "OKS_AP", "OKS_AP50", "mIoU", "ms_per_image"):
        if key in metrics:
            print(f"{key:>14s}: {metrics[key]:.4f}")
    return metrics


if __name__ == "__main__":
    main()
