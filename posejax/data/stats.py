"""What a split's people look like: person height, OKS area and people per image.

``python -m posejax.data.stats [--builder synthetic_people] [--config multi] [--split
validation] [--data-dir data] [--out docs/figures]`` writes ``<name>_people.png`` (three
histograms) and prints a markdown table of the numbers that decide how hard OKS AP is: the
share of people in COCO's area ranges (small < 32^2 <= medium < 96^2 <= large, the ranges of
``COCOeval``'s APm / APl), the median box height and area, and people per image.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posejax.data import schema

SMALL_AREA, LARGE_AREA = 32.0**2, 96.0**2  # COCOeval's area ranges


def people_stats(source: Sequence) -> dict[str, np.ndarray]:
    """``heights`` and ``areas`` of every labelled person and ``people`` per image."""
    heights, areas, people = [], [], []
    for i in range(len(source)):
        example = source[i]
        labelled = (np.asarray(example[schema.KEYPOINTS])[..., 2] > 0).any(axis=-1)
        labelled &= ~np.asarray(example[schema.IGNORE], bool)
        heights.append(np.asarray(example[schema.BOXES], np.float64)[labelled, 3])
        areas.append(np.asarray(example[schema.AREA], np.float64)[labelled])
        people.append(int(labelled.sum()))
    return {
        "heights": np.concatenate(heights) if heights else np.zeros(0),
        "areas": np.concatenate(areas) if areas else np.zeros(0),
        "people": np.asarray(people),
    }


def summary_table(stats: dict[str, np.ndarray]) -> str:
    """Markdown table of the area ranges and medians."""
    areas, heights, people = stats["areas"], stats["heights"], stats["people"]
    rows = [
        ("images", f"{len(people)}"),
        ("people", f"{len(areas)}"),
        ("people per image (mean, max)", f"{people.mean():.2f}, {people.max()}"),
        ("median box height (px)", f"{np.median(heights):.0f}"),
        ("median OKS area (px^2)", f"{np.median(areas):.0f}"),
        ("small, area < 32^2", f"{np.mean(areas < SMALL_AREA):.1%}"),
        (
            "medium, 32^2 <= area < 96^2",
            f"{np.mean((areas >= SMALL_AREA) & (areas < LARGE_AREA)):.1%}",
        ),
        ("large, area >= 96^2", f"{np.mean(areas >= LARGE_AREA):.1%}"),
    ]
    lines = ["| statistic | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def plot_stats(stats: dict[str, np.ndarray], out_path: str | Path, *, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), dpi=110)
    axes[0].hist(stats["heights"], bins=30, color="tab:blue")
    axes[0].set_xlabel("box height (px)")
    axes[1].hist(np.sqrt(stats["areas"]), bins=30, color="tab:orange")
    for edge, name in ((32, "32 (small | medium)"), (96, "96 (medium | large)")):
        axes[1].axvline(edge, color="k", ls="--", lw=1)
        axes[1].text(edge, axes[1].get_ylim()[1] * 0.9, f" {name}", fontsize=7)
    axes[1].set_xlabel("sqrt(OKS area) (px)")
    counts = np.bincount(stats["people"])
    axes[2].bar(np.arange(len(counts)), counts, color="tab:green")
    axes[2].set_xlabel("people per image")
    for ax in axes:
        ax.set_ylabel("count")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path)  # (data does not import experiments: dependencies point one way)
    plt.close(fig)
    return Path(out_path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builder", default="synthetic_people")
    parser.add_argument("--config", default="multi")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default="docs/figures")
    args = parser.parse_args(argv)

    from posejax.data.build import ensure_built

    builder = ensure_built(args.builder, data_dir=args.data_dir, config=args.config)
    source = builder.as_data_source(split=args.split)
    stats = people_stats(source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_stats(
        stats,
        out / f"{args.builder}_{args.config}_people.png",
        title=f"{args.builder}/{args.config}, {args.split} split",
    )
    print(summary_table(stats))
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
