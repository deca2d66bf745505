"""The native 3x3 convolution (``posejax.kernels``) against XLA's, layer by layer.

Compiles the training loop's step for one formulation (``benchmarks/common.Trainer``), reads
from the compiled program every convolution that runs on the native kernel (forward passes and
stride-1 input gradients; with the batch split over devices, one device's share), and times
each distinct one on its own, jitted, as the native call and as ``lax.conv_general_dilated``
with the same padding: alternating rounds, medians, on the default device with the intra-op
threads of the current setting. The train step's own speed with and without the kernel is
``POSEJAX_NATIVE_KERNELS=0`` on ``bench_train.py``.

Run:  .venv/bin/python benchmarks/bench_conv.py [--formulation heatmap] [overrides...]
(writes benchmarks/results/bench_conv.json and .md)
"""

from __future__ import annotations

import argparse
import collections

import jax
from common import (
    Trainer,
    compose_config,
    data_dir_override,
    markdown_table,
    median,
    time_calls,
    write_report,
)
from jax import lax

from posejax import kernels


def layer_timings(calls: list[dict], *, rounds: int, repeats: int) -> list[dict]:
    """Median ms of each distinct call, native and lax, over alternating rounds."""
    counts = collections.Counter(
        (c["x_shape"], c["w_shape"], c["strides"], c["pads"]) for c in calls
    )
    rows = []
    for (x_shape, w_shape, strides, pads), count in counts.items():
        keys = jax.random.split(jax.random.key(0), 2)
        x = jax.random.normal(keys[0], x_shape)
        w = jax.random.normal(keys[1], w_shape)
        native = jax.jit(lambda x, w, s=strides, p=pads: kernels.conv3x3(x, w, s, p))
        plain = jax.jit(
            lambda x, w, s=strides, p=pads: lax.conv_general_dilated(
                x, w, s, p, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        )
        times = {"native": [], "xla": []}
        for _ in range(rounds):
            for name, fn in (("native", native), ("xla", plain)):
                run = lambda fn=fn, x=x, w=w: fn(x, w).block_until_ready()  # noqa: E731
                times[name].append(median(time_calls(run, repeats=repeats)) * 1e3)
        rows.append(
            {
                "x_shape": list(x_shape),
                "w_shape": list(w_shape),
                "strides": list(strides),
                "pads": [list(p) for p in pads],
                "calls_per_step": count,
                "xla_ms": median(times["xla"]),
                "native_ms": median(times["native"]),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formulation", default="heatmap")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="calls per round")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides (default experiment=e1_quick)"
    )
    args = parser.parse_args()
    overrides = args.overrides or ["experiment=e1_quick"]
    if not kernels.conv3x3_available():
        parser.error(
            f"the native kernel is not available here ({kernels.LIBRARY} missing, "
            "POSEJAX_NATIVE_KERNELS=0 or no AVX-512F): nothing to compare"
        )
    cfg = compose_config([f"formulation={args.formulation}", *data_dir_override(), *overrides])
    trainer = Trainer(cfg)
    calls = kernels.conv3x3_calls(trainer.compiled_step.as_text())
    rows = layer_timings(calls, rounds=args.rounds, repeats=args.repeats)

    table = []
    for r in rows:
        (b, h, w, ci), co = r["x_shape"], r["w_shape"][3]
        table.append(
            [
                f"{b}x{h}x{w}, {ci} -> {co}",
                str(r["strides"][0]),
                str(r["calls_per_step"]),
                f"{r['xla_ms']:.3f}",
                f"{r['native_ms']:.3f}",
                f"{r['xla_ms'] / r['native_ms']:.2f}x",
            ]
        )
    total_xla = sum(r["xla_ms"] * r["calls_per_step"] for r in rows)
    total_native = sum(r["native_ms"] * r["calls_per_step"] for r in rows)
    table.append(
        ["**per step**", "", str(len(calls)), f"{total_xla:.2f}", f"{total_native:.2f}", ""]
    )
    header = [
        "input (B x H x W, C -> Co)",
        "stride",
        "calls/step",
        "XLA ms",
        "native ms",
        "speed-up",
    ]
    devices = jax.device_count()
    lines = [
        "# Native 3x3 convolution vs XLA's, per layer",
        "",
        f"`{args.formulation}` train step, {' '.join(overrides)}, {devices} CPU device(s): the "
        "convolutions the compiled step sends to `posejax.kernels.conv3x3` (forward passes and "
        "stride-1 input gradients, per device), each timed alone as the native call and as "
        f"`lax.conv_general_dilated`; median of {args.rounds} alternating rounds of "
        f"{args.repeats} calls.",
        "",
        *markdown_table(header, table),
    ]
    print("\n".join(lines))
    report = {
        "formulation": args.formulation,
        "overrides": overrides,
        "devices": devices,
        "layers": rows,
        "per_step_ms": {"xla": total_xla, "native": total_native},
    }
    write_report("bench_conv", report, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
