"""E3: how accurate is each refinement stage of one trained PAF network?

``python -m posejax.experiments.paf_stages RUN_DIR --out DIR [--num-images N] [--split S]``

Cao et al. (CVPR 2017, Fig. 4 and Sec. 3.1) show the confidence maps and PAFs of later stages
resolving left/right and person confusions of earlier ones, and the mAP rising with every stage.
This tool restores a run trained with ``formulation.stages=S``, runs the network once per eval
batch, and evaluates the people parsed from the maps of stage ``1 .. S`` with the project's
evaluator (OKS AP, PCK). It also reports each stage's map error against the encoder's targets
on the same images (mean squared error over the unmasked map pixels), which is what "the
maps sharpen" measures directly.

Writes ``summary.csv``, ``summary.md`` and ``plot.png`` (AP and map error against the stage) into
``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from posejax.data.pipeline import make_eval_batches
from posejax.evaluation.evaluator import ImagePrefix, evaluate
from posejax.experiments.common import MemoisedPredict, command_line, metric_row, restore_predict
from posejax.experiments.summarize import save_figure, write_table
from posejax.formulations.paf import PartAffinityFields

METRICS = ("OKS_AP", "OKS_AP50", "OKS_AR", "PCK@0.2", "heatmap_mse", "paf_mse")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PafStageDecoder(PartAffinityFields):
    """The PAF formulation, decoding (and displaying) refinement stage ``decode_stage``.

    Identical to its parent in every other respect (same head, encoder and loss), so the
    evaluator, which only calls the formulation interface, evaluates the chosen stage without
    knowing that stages exist.

    Attributes:
      decode_stage: 1-based stage whose maps are parsed (``1 .. stages``).
    """

    decode_stage: int = 1

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.decode_stage <= self.stages:
            raise ValueError(f"decode_stage must be in 1..{self.stages}, got {self.decode_stage}")

    @classmethod
    def of(cls, formulation: PartAffinityFields, decode_stage: int) -> PafStageDecoder:
        """``formulation``'s settings, decoding stage ``decode_stage``."""
        settings = {
            f.name: getattr(formulation, f.name) for f in dataclasses.fields(formulation) if f.init
        }
        return cls(**settings, decode_stage=decode_stage)

    def decode(self, outputs, *, stage: int | None = None):
        return super().decode(outputs, stage=self.decode_stage - 1 if stage is None else stage)

    def display_maps(self, outputs):
        index = self.decode_stage - 1
        return super().display_maps({k: v[index : index + 1] for k, v in outputs.items()})


def stage_map_errors(
    predict, formulation: PartAffinityFields, source, pipeline
) -> dict[str, np.ndarray]:
    """Per-stage mean squared error of the maps against the encoder's targets, over ``source``.

    Plain squared error over the unmasked map pixels (the paper's Eq. 3-4 as a mean, whatever
    loss weighting the run trained with), pooled over all images.

    Returns:
      ``{"heatmap_mse": (S,), "paf_mse": (S,)}``.
    """
    encode = jax.jit(formulation.encode)
    squared = {"heatmap_mse": np.zeros(formulation.stages), "paf_mse": np.zeros(formulation.stages)}
    counted = {"heatmap_mse": 0.0, "paf_mse": 0.0}
    for batch in make_eval_batches(source, pipeline):
        real = np.flatnonzero(batch["weight"] > 0)  # padding repeats an image with no people
        outputs = predict(batch["image"])
        targets = jax.device_get(encode({k: v[real] for k, v in batch.items()}))
        mask = np.asarray(targets["mask"], np.float64)  # (n, H, W)
        for key, name in (("heatmaps", "heatmap_mse"), ("pafs", "paf_mse")):
            predicted = np.asarray(outputs[key], np.float64)[:, real]  # (S, n, H, W, ...)
            error = (predicted - np.asarray(targets[key], np.float64)) ** 2
            error = error.reshape(*error.shape[:4], -1)  # channels last, flattened
            squared[name] += np.einsum("snhwc,nhw->s", error, mask)
            counted[name] += mask.sum() * error.shape[-1]
    return {name: squared[name] / max(counted[name], 1.0) for name in squared}


def evaluate_stages(
    run_dir: str | Path, *, num_images: int | None = None, split: str | None = None
) -> list[dict]:
    """One row per stage of the run's PAF head: evaluator metrics + map errors."""
    from posejax.data.splits import open_split

    setup, predict, step = restore_predict(run_dir)
    formulation = setup.formulation
    if not isinstance(formulation, PartAffinityFields):
        raise TypeError(f"{run_dir} trained {type(formulation).__name__}, not a PAF formulation")
    source = ImagePrefix(open_split(setup.data, split or setup.data.eval_split), num_images)
    pipeline = setup.data.eval_pipeline
    memo = MemoisedPredict(predict)
    errors = stage_map_errors(memo, formulation, source, pipeline)
    rows, gt = [], None
    for stage in range(1, formulation.stages + 1):
        decoder = PafStageDecoder.of(formulation, stage)
        result = evaluate(memo, decoder, source, pipeline, gt=gt)
        gt = result.gt  # the same images every time: convert the ground truth once
        metrics = {
            **result.metrics,
            "heatmap_mse": errors["heatmap_mse"][stage - 1],
            "paf_mse": errors["paf_mse"][stage - 1],
            "checkpoint_step": step,
        }
        metrics.pop("ms_per_image")  # the network ran once for all stages: not comparable
        rows.append(metric_row(f"stage {stage}", {"decode_stage": stage}, metrics))
    return rows


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
    for key in ("heatmap_mse", "paf_mse"):
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
    parser.add_argument("run_dir", help="a PAF run directory (config.json + checkpoints)")
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
        metrics=METRICS,
        source=str(args.run_dir),
        command=command,
        title=args.title,
    )
    plot_stages(rows, Path(args.out) / "plot.png")
    print(md_path.read_text())
    return rows


if __name__ == "__main__":
    main()
