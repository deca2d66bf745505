"""``python -m posejax.evaluate RUN_DIR``: evaluate a run's newest checkpoint again.

Reports PCK@0.2 (box- and torso-normalised), COCO OKS AP/AR through pycocotools, mIoU where the
formulation labels pixels, and milliseconds per image, on any split of the run's dataset, and
writes ``eval_<split>.json`` (metrics) and ``predictions_<split>.json`` (COCO results) into the
run directory.
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
    args = parser.parse_args(argv)

    from posejax.evaluation.evaluator import evaluate
    from posejax.train.loop import open_split, restore_run

    setup, model_def, params, step = restore_run(args.run_dir)
    split = args.split or setup.data.eval_split
    predict_fn = jax.jit(model_def.apply)
    result = evaluate(
        lambda images: predict_fn(params, images),
        setup.formulation,
        open_split(setup.data, split),
        setup.data.eval_pipeline,
        num_images=args.num_images,
        encode=jax.jit(setup.formulation.encode),
    )
    run_dir = Path(args.run_dir)
    metrics = {**result.metrics, "checkpoint_step": float(step)}
    (run_dir / f"eval_{split}.json").write_text(json.dumps(metrics, indent=2))
    (run_dir / f"predictions_{split}.json").write_text(json.dumps(result.results))
    for key in ("PCK@0.2", "PCK@0.2_torso", "OKS_AP", "OKS_AP50", "mIoU", "ms_per_image"):
        if key in metrics:
            print(f"{key:>14s}: {metrics[key]:.4f}")
    return metrics


if __name__ == "__main__":
    main()
