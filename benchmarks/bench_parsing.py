"""Time PAF parsing (``posejax.parsing.paf.group_people``) against the number of people.

Scenes come from the project's renderer (``posejax.data.render``, 256x256, exactly ``n`` people
placed, people who end up almost invisible are dropped by the renderer); their ground-truth
confidence maps and PAFs at stride 4 (64x64 maps) are made by the PAF formulation's own encoder
and parsed as if they were the network output. Each scene is parsed ``--repeats`` times per
matcher on one CPU core (the process is pinned to it and BLAS/OpenMP limited to one thread);
a scene's time is the median of its repeats, and the table reports the median and the maximum
over scenes. Target (the project issue): at most 2 ms per image for 10 people.

Run:  .venv/bin/python benchmarks/bench_parsing.py
(writes benchmarks/results/bench_parsing.json and .md)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from common import cpu_name  # noqa: E402

from posejax.experiments.grouping import encode_scenes, make_scenes  # noqa: E402
from posejax.formulations.paf import PartAffinityFields  # noqa: E402
from posejax.parsing.matching import MATCHERS  # noqa: E402
from posejax.parsing.paf import group_people  # noqa: E402

INPUT_SIZE = 256
STRIDE = 4
RESULTS = Path(__file__).parent / "results"


def make_maps(num_people: int, num_scenes: int, seed: int) -> tuple[np.ndarray, ...]:
    """Ground-truth ``(N, H, W, K)`` heatmaps, ``(N, H, W, L, 2)`` PAFs and people per scene
    (the scenes and encoding of ``posejax.experiments.grouping``, at 256x256)."""
    scenes = make_scenes(num_people, num_scenes, seed, image_size=INPUT_SIZE, heights=(0.3, 0.8))
    formulation = PartAffinityFields(stride=STRIDE, input_size=(INPUT_SIZE, INPUT_SIZE))
    maps = encode_scenes(formulation, scenes, "clean", seed)
    people = np.array([len(scene["keypoints"]) for scene in scenes])
    return np.stack([h for h, _ in maps]), np.stack([p for _, p in maps]), people


def time_scene(heatmaps, pafs, matcher: str, repeats: int) -> tuple[float, int]:
    """Median seconds of ``group_people`` on one scene, and the number of people it finds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        poses, _ = group_people(heatmaps, pafs, matcher=matcher)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), len(poses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-people", type=int, default=16)
    parser.add_argument("--scenes", type=int, default=10, help="scenes per number of people")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per scene")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin the process to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})

    rows = []
    for num_people in range(1, args.max_people + 1):
        heatmaps, pafs, people = make_maps(num_people, args.scenes, args.seed)
        group_people(heatmaps[0], pafs[0])  # warm-up (imports, first-call allocations)
        row = {"people_placed": num_people, "people_mean": float(people.mean())}
        for matcher in MATCHERS:
            timed = [
                time_scene(h, p, matcher, args.repeats) for h, p in zip(heatmaps, pafs, strict=True)
            ]
            times_ms = np.array([t for t, _ in timed]) * 1e3
            found = np.array([n for _, n in timed])
            row[matcher] = {
                "median_ms": float(np.median(times_ms)),
                "max_ms": float(times_ms.max()),
                "found_mean": float(found.mean()),
            }
        rows.append(row)
        print(
            f"{num_people:2d} people: "
            + ", ".join(f"{m} {row[m]['median_ms']:.2f} ms" for m in MATCHERS),
            flush=True,
        )

    report = {
        "benchmark": "group_people on ground-truth 64x64 maps, one CPU core",
        "command": " ".join(["python", *sys.argv]),
        "settings": vars(args) | {"out": str(args.out), "input_size": INPUT_SIZE},
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_name(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load_average_1_5_15_min": os.getloadavg(),
        },
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_parsing.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench_parsing.md").write_text(_markdown(report))
    print(f"wrote {args.out / 'bench_parsing.json'} and bench_parsing.md")


def _markdown(report: dict) -> str:
    lines = [
        "# PAF parsing time vs number of people",
        "",
        f"`group_people` on ground-truth 64x64 maps (256x256 input, stride 4), one core of "
        f"{report['machine']['processor']}; {report['settings']['scenes']} rendered scenes per "
        f"row, median of {report['settings']['repeats']} runs per scene. "
        f"Produced by `{report['command']}` on {report['date']} (load average "
        f"{report['machine']['load_average_1_5_15_min'][0]:.1f}: the machine is shared, so "
        "times are upper bounds).",
        "",
        "| people placed | people (mean) | greedy median ms | greedy max ms | greedy found "
        "| optimal median ms | optimal max ms | optimal found |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        cells = [str(row["people_placed"]), f"{row['people_mean']:.1f}"]
        for matcher in MATCHERS:
            r = row[matcher]
            cells += [f"{r['median_ms']:.2f}", f"{r['max_ms']:.2f}", f"{r['found_mean']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
