"""E4: greedy vs optimal matching vs ILP grouping on the same network outputs: accuracy, time.

``python -m posejax.experiments.matching RUN_DIR --out DIR [--num-images N] [--repeats R]``

PAF parsing scores every candidate pair of every limb by its line integral and then picks, per
limb, a set of pairs that share no part (a bipartite matching, Cao et al. CVPR 2017, Eq. 12-14).
OpenPose picks them greedily by score; the Hungarian algorithm finds the per-limb optimum; the
ILP (:mod:`posejax.parsing.ilp`) partitions all candidates at once, on the limb graph or the
dense one. This tool restores one trained PAF run, runs its network once per eval batch, and
decodes those same outputs with every grouping of
:data:`posejax.experiments.grouping.VARIANTS`:

* accuracy: the project's evaluator (OKS AP, PCK) on the decoded people;
* time: :func:`posejax.parsing.paf.group_people` on each image's last-stage maps, ``--repeats``
  times; an image's time is the median of its repeats, the table reports the mean and the
  maximum over images (milliseconds, this process, whatever cores it may use);
* agreement: the fraction of images whose parse is identical to the greedy one.

Writes ``summary.csv``, ``summary.md`` and ``plot.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from posejax.evaluation.evaluator import ImagePrefix, evaluate
from posejax.experiments.common import MemoisedPredict, command_line, metric_row, restore_predict
from posejax.experiments.grouping import VARIANTS
from posejax.experiments.summarize import save_figure, write_table
from posejax.formulations.paf import PartAffinityFields
from posejax.parsing.paf import group_people

METRICS = (
    "OKS_AP",
    "OKS_AP50",
    "PCK@0.2",
    "parse_ms_mean",
    "parse_ms_max",
    "people_per_image",
    "same_as_greedy",
)


def time_parsing(
    maps: Sequence[tuple[np.ndarray, np.ndarray]], settings: dict, *, repeats: int
) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """Median seconds of ``group_people(heatmaps, pafs, **settings)`` per image, its poses and
    the grouping's status (``GroupingInfo.status``: ILP ``optimal`` / ``time_limit`` / ...).

    Args:
      maps: per image, ``(H, W, K)`` heatmaps and ``(H, W, L, 2)`` PAFs.
      settings: keyword arguments of :func:`group_people` (including ``matcher``).
      repeats: timed runs per image.

    Returns:
      ``(seconds (N,), poses, statuses)`` with ``poses[i]`` the ``(P, K, 3)`` result for image
      ``i``.
    """
    seconds, poses, statuses = np.zeros(len(maps)), [], []
    for i, (heatmaps, pafs) in enumerate(maps):
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            people, _, info = group_people(heatmaps, pafs, return_info=True, **settings)
            runs.append(time.perf_counter() - start)
        seconds[i] = np.median(runs)
        poses.append(people)
        statuses.append(info.status.split(":")[0])
    return seconds, poses, statuses


def compare_matchers(
    run_dir: str | Path,
    *,
    num_images: int | None = None,
    split: str | None = None,
    repeats: int = 5,
    matchers: Sequence[str] = tuple(VARIANTS),
    parsing: dict | None = None,
) -> list[dict]:
    """One row per grouping (a name of :data:`VARIANTS`): evaluator metrics, parsing time and
    agreement with greedy. ``parsing``: :class:`ParsingConfig` fields set for every grouping
    (e.g. a shorter ``ilp_time_limit``), before each variant's own."""
    from posejax.data.splits import open_split

    setup, predict, step = restore_predict(run_dir)
    formulation = setup.formulation
    if not isinstance(formulation, PartAffinityFields):
        raise TypeError(f"{run_dir} trained {type(formulation).__name__}, not a PAF formulation")
    formulation = dataclasses.replace(
        formulation, parsing=dataclasses.replace(formulation.parsing, **(parsing or {}))
    )
    source = ImagePrefix(open_split(setup.data, split or setup.data.eval_split), num_images)
    memo = MemoisedPredict(predict)
    results, gt = {}, None
    for matcher in matchers:
        parsing = dataclasses.replace(formulation.parsing, **VARIANTS[matcher])
        decoder = dataclasses.replace(formulation, parsing=parsing)
        result = evaluate(memo, decoder, source, setup.data.eval_pipeline, gt=gt)
        results[matcher], gt = result.metrics, result.gt

    # Every real image's last-stage maps, from the outputs the evaluator decoded (padding
    # examples of the last batch are copies of its last image: dropped by counting images).
    maps = []
    for outputs in memo.cache.values():
        for heatmaps, pafs in zip(outputs["heatmaps"][-1], outputs["pafs"][-1], strict=True):
            maps.append((heatmaps, pafs))
    maps = maps[: len(source)]
    # Warm-up: first-call costs.
    group_people(*maps[0], limbs=formulation.limbs, config=formulation.parsing)
    parses, rows = {}, []
    for matcher in matchers:
        settings = {"limbs": formulation.limbs, "config": formulation.parsing, **VARIANTS[matcher]}
        seconds, parses[matcher], statuses = time_parsing(maps, settings, repeats=repeats)
        reference = parses.get("greedy", parses[matcher])
        same = np.mean(
            [
                a.shape == b.shape and np.allclose(a, b)
                for a, b in zip(parses[matcher], reference, strict=True)
            ]
        )
        metrics = {
            **results[matcher],
            "parse_ms_mean": 1e3 * seconds.mean(),
            "parse_ms_max": 1e3 * seconds.max(),
            "people_per_image": np.mean([len(p) for p in parses[matcher]]),
            "same_as_greedy": same,
            "checkpoint_step": step,
            "network_calls": memo.calls,
        }
        counts = collections.Counter(statuses)
        summary = ",".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        rows.append(metric_row(matcher, {"matcher": matcher, "status": summary}, metrics))
    return rows


def plot_matchers(rows: Sequence[dict], out_path: str | Path) -> Path:
    """Bars per matcher: accuracy (left: OKS AP and PCK@0.2) and mean parsing time (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["overrides"]["matcher"] for r in rows]
    x = np.arange(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(7, 3), dpi=120)
    for i, key in enumerate(("OKS_AP", "PCK@0.2")):
        left.bar(x + (i - 0.5) * 0.4, [r["metrics"][key] for r in rows], 0.4, label=key)
    left.set_xticks(x, names)
    left.set_ylabel("accuracy")
    left.legend(fontsize=8)
    right.bar(x, [r["metrics"]["parse_ms_mean"] for r in rows], 0.5, color="C2")
    right.set_xticks(x, names)
    right.set_ylabel("parsing ms / image (mean)")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out_path)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a PAF run directory (config.json + checkpoints)")
    parser.add_argument("--out", required=True, help="folder for summary.csv/md and plot.png")
    parser.add_argument("--num-images", type=int, default=None, help="first N eval images")
    parser.add_argument("--split", default=None, help="dataset split (default: the run's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed parses per image")
    parser.add_argument("--title", default="E4: greedy vs optimal vs ILP grouping")
    parser.add_argument(
        "--parsing",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="ParsingConfig fields for every grouping, e.g. ilp_time_limit=2 ilp_fallback=greedy",
    )
    args = parser.parse_args(argv)
    parsing = {}
    for item in args.parsing:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--parsing {item!r}: expected KEY=VALUE")
        parsing[key] = yaml.safe_load(value)
    rows = compare_matchers(
        args.run_dir,
        num_images=args.num_images,
        split=args.split,
        repeats=args.repeats,
        parsing=parsing,
    )
    command = command_line("posejax.experiments.matching", argv)
    _, md_path = write_table(
        rows, args.out, metrics=METRICS, source=str(args.run_dir), command=command, title=args.title
    )
    plot_matchers(rows, Path(args.out) / "plot.png")
    print(md_path.read_text())
    return rows


if __name__ == "__main__":
    main()
