"""Collect a sweep's runs into ``summary.csv``, ``summary.md`` and an optional plot.

``python -m posejax.experiments.summarize <sweep dir> [--out DIR] [--metrics ...] [--plot X Y]``

A run is any folder under the sweep directory holding ``final_metrics.json``. Its label is the
folder's path relative to the sweep directory; the Hydra overrides that differ between runs
(read from each run's ``.hydra/overrides.yaml``) become columns, so a table always shows what
varied and nothing else.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path

DEFAULT_METRICS = ("PCK@0.2", "PCK@0.2_torso", "OKS_AP", "OKS_AP50", "mIoU", "ms_per_image")


def _overrides(run_dir: Path) -> dict[str, str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("- "):
            key, _, value = line[2:].partition("=")
            out[key.strip().strip("'\"")] = value.strip().strip("'\"")
    return out


def collect(sweep_dir: str | Path) -> list[dict]:
    """One dict per run: ``run`` label, its overrides, and its final metrics."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for metrics_path in sorted(sweep_dir.rglob("final_metrics.json")):
        run_dir = metrics_path.parent
        metrics = json.loads(metrics_path.read_text())
        rows.append(
            {
                "run": str(run_dir.relative_to(sweep_dir)) or ".",
                "overrides": _overrides(run_dir),
                "metrics": metrics,
            }
        )
    if not rows:
        raise FileNotFoundError(f"no final_metrics.json under {sweep_dir}: did the sweep run?")
    return rows


def varying_keys(rows: Sequence[dict]) -> list[str]:
    keys = sorted({k for r in rows for k in r["overrides"]})
    return [k for k in keys if len({r["overrides"][k] for r in rows if k in r["overrides"]}) > 1]


def format_value(value) -> str:
    """A table cell: integers without decimals, three decimals otherwise, "–" for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1:
            return str(int(value))
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)


def table(rows: Sequence[dict], metrics: Sequence[str]) -> tuple[list[str], list[list]]:
    keys = varying_keys(rows)
    present = [m for m in metrics if any(m in r["metrics"] for r in rows)]
    header = ["run", *keys, *present]
    body = [
        [
            r["run"],
            *[r["overrides"].get(k, "") for k in keys],
            *[r["metrics"].get(m) for m in present],
        ]
        for r in rows
    ]
    return header, body


def write_summary(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    command: str | None = None,
    title: str = "Summary",
) -> tuple[Path, Path]:
    return write_table(
        collect(sweep_dir),
        out_dir or sweep_dir,
        metrics=metrics,
        source=str(Path(sweep_dir)),
        command=command,
        title=title,
    )


def write_table(
    rows: Sequence[dict],
    out_dir: str | Path,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    source: str | None = None,
    command: str | None = None,
    title: str = "Summary",
) -> tuple[Path, Path]:
    """``summary.csv`` and ``summary.md`` of ``rows`` (the layout :func:`collect` returns).

    For tools that measure something other than a training sweep (one run decoded several ways,
    timings) but want the same table format: a row's ``overrides`` are what varies.
    """
    header, body = table(rows, metrics)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "summary.csv", out_dir / "summary.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)
    lines = [
        f"# {title}",
        "",
        f"- date: {dt.date.today().isoformat()}",
        f"- machine: {platform.machine()}, {platform.processor() or platform.system()}, "
        f"{_cpu_count()} CPU cores, {_device_summary()}",
    ]
    if source:
        lines.append(f"- runs: `{source}`")
    if command:
        lines.append(f"- command: `{command}`")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_value(v) for v in row) + " |" for row in body]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _device_summary() -> str:
    try:
        import jax

        devices = jax.devices()
        return f"{len(devices)} x {devices[0].device_kind}"
    except Exception:  # noqa: BLE001 - the summary must still be written without JAX
        return "devices unknown"


def plot(
    sweep_dir: str | Path,
    x: str,
    y: str,
    out_path: str | Path,
    *,
    hue: str | None = None,
    logx: bool = False,
) -> Path:
    """Line plot of metric ``y`` against override or metric ``x``, one line per ``hue`` value."""
    return plot_rows(collect(sweep_dir), x, y, out_path, hue=hue, logx=logx)


def plot_rows(
    rows: Sequence[dict],
    x: str,
    y: str,
    out_path: str | Path,
    *,
    hue: str | None = None,
    logx: bool = False,
) -> Path:
    """:func:`plot` for rows in the layout :func:`collect` returns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(r, key):
        if key in r["metrics"]:
            return r["metrics"][key]
        raw = r["overrides"].get(key, r["run"] if key == "run" else None)
        try:
            return float(raw)
        except (TypeError, ValueError):
            return raw

    groups: dict[str, list[tuple]] = {}
    for r in rows:
        groups.setdefault(str(value(r, hue)) if hue else y, []).append((value(r, x), value(r, y)))
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for label, points in sorted(groups.items()):
        points = sorted(p for p in points if p[1] is not None)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if logx:
        ax.set_xscale("log")
    if hue:
        ax.legend(title=hue, fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_path)


def save_figure(fig, out_path: str | Path) -> Path:
    """Tight layout, write (PNG by the extension), close; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--out", default=None, help="output folder (default: the sweep dir)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--title", default="Summary")
    parser.add_argument("--command", default=None, help="the command that produced the runs")
    parser.add_argument("--plot", nargs=2, metavar=("X", "Y"), default=None)
    parser.add_argument("--hue", default=None)
    parser.add_argument("--logx", action="store_true")
    args = parser.parse_args(argv)
    csv_path, md_path = write_summary(
        args.sweep_dir, args.out, metrics=args.metrics, command=args.command, title=args.title
    )
    print(md_path.read_text())
    print(f"wrote {csv_path} and {md_path}")
    if args.plot:
        out = Path(args.out or args.sweep_dir) / "plot.png"
        plot(args.sweep_dir, *args.plot, out, hue=args.hue, logx=args.logx)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
