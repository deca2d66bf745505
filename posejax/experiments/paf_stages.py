"""E3: how accurate is each refinement stage of one trained network?

``python -m posejax.experiments.paf_stages RUN_DIR --out DIR [--num-images N] [--split S]``

Cao et al. (CVPR 2017, Fig. 4 and Sec. 3.1) show the confidence maps and PAFs of later stages
resolving left/right and person confusions of earlier ones, and the mAP rising with every stage.
This tool restores a run trained with ``formulation.stages=S``, runs the network once per eval
batch, and evaluates the people decoded from stage ``1 .. S`` with the project's evaluator
(``evaluate(..., stage=s)``: OKS AP, PCK). It also reports each stage's map error against the
encoder's targets on the same images (mean squared error over the unmasked map pixels), which is
what "the maps sharpen" measures directly.

Only the formulation contract is used (:mod:`posejax.formulations.base`: ``staged_outputs``,
``num_stages``, ``decode(stage=)``), so any formulation with staged outputs works: the PAF stages
of E3, or a regression cascade (which has accuracy per stage but no map error: its staged
outputs are coordinates, not maps).

Writes ``summary.csv``, ``summary.md`` and ``plot.png`` (AP and map error against the stage) into
``--out``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from posejax.data.pipeline import make_eval_batches
from posejax.evaluation.evaluator import ImagePrefix, evaluate
from posejax.experiments.common import MemoisedPredict, command_line, metric_row, restore_predict
from posejax.experiments.summarize import save_figure, write_table
from posejax.formulations.base import Formulation
from posejax.formulations.common import downsample_mask

ACCURACY_METRICS = ("OKS_AP", "OKS_AP50", "OKS_AR", "PCK@0.2")


def map_error_name(output: str) -> str:
    """Metric name of a staged map output's error: the output's name in the singular + ``_mse``
    (``heatmaps`` -> ``heatmap_mse``, ``pafs`` -> ``paf_mse``)."""
    return f"{output.removesuffix('s')}_mse"


def stage_map_errors(predict, formulation: Formulation, source, pipeline) -> dict[str, np.ndarray]:
    """Per-stage mean squared error of the staged maps against the encoder's targets.

    A staged output (``formulation.staged_outputs``) is a map when its target of the same name is
    laid out on the output grid, ``(B, H, W, ...)``. Its error is the plain squared error over
    the map pixels the batch's ``loss_mask`` keeps (min-pooled to the map, as the losses do),
    pooled over all images of ``source`` and all channels: the paper's Eq. 3-4 as a mean,
    whatever loss weighting the run trained with.

    Returns:
      ``{map_error_name(output): (S,)}`` per staged map output (``heatmap_mse``, ``paf_mse``).
    """
    encode = jax.jit(formulation.encode)
    squared: dict[str, np.ndarray] = {}
    counted: dict[str, float] = {}
    for batch in make_eval_batches(source, pipeline):
        real = np.flatnonzero(batch["weight"] > 0)  # padding repeats an image with no people
        outputs = predict(batch["image"])
        inputs = {k: v[real] for k, v in formulation.encoder_batch(batch).items()}
        targets = jax.device_get(encode(inputs))
        mask = np.asarray(
            downsample_mask(np.asarray(batch["loss_mask"][real], np.float32), formulation.stride),
            np.float64,
        )  # (n, H, W)
        for key in formulation.staged_outputs:
            predicted = np.asarray(outputs[key], np.float64)[:, real]  # (S, n, H, W, ...)
            target = np.asarray(targets.get(key, np.empty(0)), np.float64)
            if target.shape != predicted.shape[1:] or target.shape[1:3] != mask.shape[1:]:
                continue  # not a map (or no target of that name)
            error = (predicted - target) ** 2
            error = error.reshape(*error.shape[:4], -1)  # channels last, flattened
            name = map_error_name(key)
            squared[name] = squared.get(name, 0.0) + np.einsum("snhwc,nhw->s", error, mask)
            counted[name] = counted.get(name, 0.0) + mask.sum() * error.shape[-1]
    return {name: squared[name] / max(counted[name], 1.0) for name in squared}


def evaluate_stages(
    run_dir: str | Path, *, num_images: int | None = None, split: str | None = None
) -> list[dict]:
    """One row per stage of the run's network: evaluator metrics + map errors."""
    from posejax.data.splits import open_split

    setup, predict, step = restore_predict(run_dir)
    formulation = setup.formulation
    if not formulation.staged_outputs:
        raise TypeError(
            f"{run_dir} trained {type(formulation).__name__}, whose outputs have no stage axis "
            "(staged_outputs is empty): there are no stages to compare"
        )
    source = ImagePrefix(open_split(setup.data, split or setup.data.eval_split), num_images)
    pipeline = setup.data.eval_pipeline
    memo = MemoisedPredict(predict)
    errors = stage_map_errors(memo, formulation, source, pipeline)
    rows, gt = [], None
    for stage in range(1, formulation.num_stages + 1):
        result = evaluate(memo, formulation, source, pipeline, gt=gt, stage=stage - 1)
        gt = result.gt  # the same images every time: convert the ground truth once
        metrics = {
            **result.metrics,
            **{name: error[stage - 1] for name, error in errors.items()},
            "checkpoint_step": step,
        }
        metrics.pop("ms_per_image")  # the network ran once for all stages: not comparable
        rows.append(metric_row(f"stage {stage}", {"decode_stage": stage}, metrics))
    return rows


def error_metrics(rows: Sequence[dict]) -> list[str]:
    """The map-error columns of ``rows`` (:func:`stage_map_errors`), in their order."""
    return [key for key in rows[0]["metrics"] if key.endswith("_mse")] if rows else []


def plot_stages(rows: Sequence[dict], out_path: str | Path) -> Path:
    """AP and PCK (left) and map errors (right) against the decoded stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [int(r["overrides"]["decode_stage"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.3), dpi=120)
    for key in ("OKS_AP", "PCK@0.2"):
        left.plot(stages, [r["metrics"][key] for r in rows], marker="o", label=key)
    left.set_xlabel("decoded stage")
    left.set_ylabel("accuracy")
    left.legend(fontsize=8)
    for key in error_metrics(rows):
        right.plot(stages, [r["metrics"][key] for r in rows], marker="o", label=key)
    right.set_xlabel("decoded stage")
    right.set_ylabel("masked squared error vs targets")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xticks(stages)
        ax.grid(alpha=0.3)
    return save_figure(fig, out_path)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run_dir", help="a run directory of a staged formulation (PAF; config.json + checkpoints)"
    )
    parser.add_argument("--out", required=True, help="folder for summary.csv/md and plot.png")
    parser.add_argument("--num-images", type=int, default=None, help="first N eval images")
    parser.add_argument("--split", default=None, help="dataset split (default: the run's)")
    parser.add_argument("--title", default="E3: accuracy per PAF refinement stage")
    args = parser.parse_args(argv)
    rows = evaluate_stages(args.run_dir, num_images=args.num_images, split=args.split)
    command = command_line("posejax.experiments.paf_stages", argv)
    _, md_path = write_table(
        rows,
        args.out,
        metrics=(*ACCURACY_METRICS, *error_metrics(rows)),
        source=str(args.run_dir),
        command=command,
        title=args.title,
    )
    plot_stages(rows, Path(args.out) / "plot.png")
    print(md_path.read_text())
    return rows


if __name__ == "__main__":
    main()
