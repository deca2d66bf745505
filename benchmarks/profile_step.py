"""Where the compiled train step's time goes: a ``jax.profiler`` trace, summed per XLA op.

Builds the loop's own step for one formulation (``benchmarks/common.Trainer``), runs it a few
times, then records ``--steps`` steps under ``jax.profiler.trace`` (a Perfetto trace; no
TensorBoard plugin needed) and sums the duration of every XLA:CPU thunk by name. Prints the
share of four groups and the slowest ops with their output shapes (from the compiled HLO):

* ``convolution``: XLA's convolution thunks;
* ``transpose/copy``: layout changes (mostly the weight gradient's input transposes);
* ``reduce``: reductions XLA emits itself (YNNPACK's are ``ynn_fusion``, counted as other);
* ``elementwise/other``: every other fusion, YNNPACK fusions, collectives.

On XLA:CPU convolution thunks run on the intra-op thread pool and return before they finish,
so with several threads their time is charged to whatever waits for them; profile one core,
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0``, for shares that add up.

Run:  XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0 \\
      .venv/bin/python benchmarks/profile_step.py --formulation heatmap [overrides...]
(prints; writes benchmarks/results/profile_step_<formulation>.md)
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import jax
from common import RESULTS, Trainer, compose_config, data_dir_override, markdown_table

GROUPS = ("convolution", "transpose/copy", "reduce", "elementwise/other")
NOT_OPS = ("$", "ThunkExecutor", "PjitFunction", "CommonPjRt", "Wait", "Rendezvous")


def group_of(name: str) -> str:
    if "conv" in name:
        return "convolution"
    if "transpose" in name or name.startswith("copy") or "_copy" in name:
        return "transpose/copy"
    if "reduce" in name and "all-reduce" not in name:
        return "reduce"
    return "elementwise/other"


def op_times(trace: dict, steps: int) -> dict[str, float]:
    """Milliseconds per step of every XLA op in a Perfetto trace (complete events by name)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total: collections.Counter = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not str(event.get("name", "")).startswith(NOT_OPS):
            total[event["name"]] += event["dur"]
    return {name: us / steps / 1e3 for name, us in total.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formulation", default="heatmap")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args()

    cfg = compose_config([f"formulation={args.formulation}", *data_dir_override(), *args.overrides])
    trainer = Trainer(cfg)
    iterator = trainer.iterator()
    batches = [trainer.shard(next(iterator)) for _ in range(3)]
    step, state, rng = trainer.compiled_step, trainer.state, jax.random.key(0)

    def run(n: int):
        nonlocal state
        for i in range(n):
            state, _ = step(state, batches[i % len(batches)], rng)
            jax.block_until_ready(state)

    run(3)
    start = time.perf_counter()
    run(args.steps)
    step_ms = (time.perf_counter() - start) / args.steps * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            run(args.steps)
        trace = json.load(gzip.open(next(Path(tmp).rglob("perfetto_trace.json.gz"))))
    times = op_times(trace, args.steps)
    hlo = step.as_text()

    def shape_of(name: str) -> str:
        found = re.search(r"%" + re.escape(name) + r" = (\S+)", hlo)
        return found.group(1) if found else "?"

    groups = collections.Counter()
    for name, ms in times.items():
        groups[group_of(name)] += ms
    traced = sum(groups.values())
    lines = [
        f"# Where the {args.formulation} train step's time goes",
        "",
        f"`python benchmarks/profile_step.py --formulation {args.formulation}"
        + "".join(f" {o}" for o in args.overrides)
        + f"`; {jax.device_count()} device(s); step {step_ms:.1f} ms untraced, "
        f"{traced:.1f} ms of XLA ops traced per step (summed over devices and threads).",
        "",
        *markdown_table(
            ["group", "ms/step", "share"],
            [[g, f"{groups[g]:.1f}", f"{groups[g] / traced:.0%}"] for g in GROUPS],
        ),
        "",
        *markdown_table(
            ["op", "output", "group", "ms/step"],
            [
                [f"`{n}`", f"`{shape_of(n)}`", group_of(n), f"{ms:.2f}"]
                for n, ms in sorted(times.items(), key=lambda kv: -kv[1])[: args.top]
            ],
        ),
    ]
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"profile_step_{args.formulation}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
