"""Run every benchmark (``benchmarks/bench_*.py``) and collect their tables in one file.

Each script runs in its own interpreter (each sets up JAX as it needs, e.g. bench_parsing pins
itself to one core), in the order below (bench_encode reads bench_train's step times), and
writes ``benchmarks/results/<name>.json`` and ``.md``; this script then concatenates the
markdown tables into ``benchmarks/results/summary.md``. A script that fails is reported and the
others still run; the exit status is non-zero if any failed.

Run:  .venv/bin/python benchmarks/run_all.py [bench_train bench_inference ...]   (make bench)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = [
    "bench_train",
    "bench_pipeline",
    "bench_loop",
    "bench_encode",
    "bench_inference",
    "bench_parsing",
]
# Second runs with other arguments (name -> (results name, extra arguments)): the train step
# again with one CPU device per core (distributed.cpu_devices=cores, data parallel).
EXTRA = {"bench_train": ("bench_train_cores", ["distributed.cpu_devices=cores", "--tag", "cores"])}


def main() -> int:
    available = [n for n in ORDER if (HERE / f"{n}.py").exists()]
    available += sorted(p.stem for p in HERE.glob("bench_*.py") if p.stem not in ORDER)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"a subset of {available} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available}")

    runs = []
    for name in args.names or available:
        runs.append((name, name, []))
        if name in EXTRA:
            runs.append((name, *EXTRA[name]))
    failed, seconds = [], {}
    for script, name, extra in runs:
        print(f"=== {name}", flush=True)
        start = time.perf_counter()
        command = [sys.executable, str(HERE / f"{script}.py"), *extra]
        code = subprocess.call(command, cwd=HERE.parent)
        seconds[name] = time.perf_counter() - start
        if code:
            failed.append(name)
            print(f"=== {name} FAILED (exit status {code})", flush=True)

    parts = ["# Benchmarks", "", "Produced by `python benchmarks/run_all.py` (`make bench`).", ""]
    names = [n for name in available for n in (name, *EXTRA.get(name, ())[:1])]
    for name in names:
        md = RESULTS / f"{name}.md"
        if md.exists():
            parts += [md.read_text().replace("\n# ", "\n## ").replace("# ", "## ", 1), ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.md").write_text("\n".join(parts))
    for name, s in seconds.items():
        print(f"{name}: {s:.0f} s{' (failed)' if name in failed else ''}")
    print(f"wrote {RESULTS / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
