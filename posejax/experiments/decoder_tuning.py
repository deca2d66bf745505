"""Tune a trained run's decoder settings on a split that the result tables do not report.

``python -m posejax.experiments.decoder_tuning RUN_DIR --out DIR [--split train]
[--num-images N] --grid parsing.min_person_score=0.4,0.8 parsing.min_parts=3,5 ...``

Decoder thresholds (PAF parsing: ``parsing.peak_threshold``, ``parsing.min_parts``, ...)
are part of the recipe, so they are chosen like any other hyper-parameter: on data that the
reported numbers do not come from. The default split is ``train`` (the first ``--num-images``
training images, un-augmented, as the evaluator reads them); the validation split that E1 and
the other tables report is refused unless ``--allow-eval-split`` is given (for looking, never
for choosing).

The network runs once per batch (:class:`~posejax.experiments.common.MemoisedPredict`); every
point of the grid (the Cartesian product of the ``--grid`` values, applied to the formulation
with ``dataclasses.replace``, so any formulation field can be tuned, nested ones by a dotted
name as in Hydra overrides) decodes the same outputs.
Writes ``summary.csv`` / ``summary.md`` (one row per setting, best OKS AP first) into ``--out``
and prints the best setting as Hydra overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path

import yaml

from posejax.evaluation.evaluator import ImagePrefix, evaluate
from posejax.experiments.common import MemoisedPredict, command_line, metric_row, restore_predict
from posejax.experiments.summarize import write_table

METRICS = ("OKS_AP", "OKS_AP50", "PCK@0.2", "people_found_ratio")


def _field_names(obj) -> set[str]:
    return {f.name for f in dataclasses.fields(obj)}


def parse_grid(items: Sequence[str], formulation) -> dict[str, list]:
    """``["key=v1,v2", ...]`` -> ``{key: [v1, v2]}`` with YAML-typed values; ``key`` is a
    field of the formulation or a dotted path into a nested one (``parsing.min_parts``);
    unknown keys are an error naming the available fields."""
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"--grid {item!r}: expected KEY=V1,V2,...")
        node = formulation
        for name in key.split("."):
            if not dataclasses.is_dataclass(node) or name not in _field_names(node):
                fields = _field_names(node) if dataclasses.is_dataclass(node) else set()
                raise ValueError(
                    f"--grid {key}: {type(node).__name__} has no field {name!r} "
                    f"(fields: {', '.join(sorted(fields))})"
                )
            node = getattr(node, name)
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def with_settings(obj, point: dict):
    """``obj`` with the (possibly dotted) fields of ``point`` replaced, nested dataclasses
    rebuilt with ``dataclasses.replace``."""
    direct, nested = {}, {}
    for key, value in point.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[key] = value
    for head, sub in nested.items():
        direct[head] = with_settings(getattr(obj, head), sub)
    return dataclasses.replace(obj, **direct)


def tune(
    run_dir: str | Path,
    grid_items: Sequence[str],
    *,
    split: str = "train",
    num_images: int | None = 200,
    allow_eval_split: bool = False,
) -> list[dict]:
    """One row per grid point, by decreasing OKS AP."""
    from posejax.data.splits import open_split

    setup, predict, step = restore_predict(run_dir)
    if split == setup.data.eval_split and not allow_eval_split:
        raise ValueError(
            f"decoder_tuning: {split!r} is the split the result tables report; tune on "
            "'train' or 'test' (or pass --allow-eval-split to look without choosing)"
        )
    grid = parse_grid(grid_items, setup.formulation)
    source = ImagePrefix(open_split(setup.data, split), num_images)
    memo = MemoisedPredict(predict)
    rows, gt = [], None
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        decoder = with_settings(setup.formulation, point)
        result = evaluate(memo, decoder, source, setup.data.eval_pipeline, gt=gt)
        gt = result.gt
        label = ",".join(f"{k}={v}" for k, v in point.items())
        metrics = {**result.metrics, "checkpoint_step": step, "network_calls": memo.calls}
        rows.append(metric_row(label, point, metrics))
    return sorted(rows, key=lambda r: -r["metrics"]["OKS_AP"])


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--allow-eval-split", action="store_true")
    args = parser.parse_args(argv)
    rows = tune(
        args.run_dir,
        args.grid,
        split=args.split,
        num_images=args.num_images,
        allow_eval_split=args.allow_eval_split,
    )
    command = command_line("posejax.experiments.decoder_tuning", argv)
    _, md_path = write_table(
        rows,
        args.out,
        metrics=METRICS,
        source=str(args.run_dir),
        command=command,
        title=f"Decoder settings on the {args.split} split",
    )
    print(md_path.read_text())
    best = rows[0]["overrides"]
    print("best:", " ".join(f"formulation.{k}={v}" for k, v in best.items()))
    return rows


if __name__ == "__main__":
    main()
