"""The native 3x3 convolution (``posejax.kernels``) against XLA's, layer by layer.

Compiles the training loop's step for one formulation (``benchmarks/common.Trainer``), reads
from the compiled program every call of the native kernels (forward passes and stride-1 input
gradients, one device's share when the batch is split; weight gradients when it is not), and
times each distinct one on its own, jitted, as the native call and as XLA's
(``lax.conv_general_dilated`` with the same padding, or its weight gradient through
``jax.vjp``): alternating rounds, medians, on the default device with the intra-op
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


def _pair(kind, x_shape, w_shape, strides, pads):
    """(native, xla) jitted functions of one call and their arguments."""
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], x_shape)
    w = jax.random.normal(keys[1], w_shape)

    def plain(x, w):
        return lax.conv_general_dilated(
            x, w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    if kind == "forward":
        native = jax.jit(lambda x, w: kernels.conv3x3(x, w, strides, pads))
        return native, jax.jit(plain), (x, w)
    dy = jax.random.normal(keys[2], jax.eval_shape(plain, x, w).shape)
    native = jax.jit(lambda x, dy: kernels.conv3x3_weight_grad(x, dy, strides, pads))
    xla = jax.jit(lambda x, dy: jax.vjp(lambda w: plain(x, w), w)[1](dy)[0])
    return native, xla, (x, dy)


def layer_timings(calls: list[dict], *, rounds: int, repeats: int) -> list[dict]:
    """Median ms of each distinct call, native and XLA's, over alternating rounds."""
    counts = collections.Counter(
        (c["kind"], c["x_shape"], c["w_shape"], c["strides"], c["pads"]) for c in calls
    )
    rows = []
    for (kind, x_shape, w_shape, strides, pads), count in counts.items():
        native, xla, args = _pair(kind, x_shape, w_shape, strides, pads)
        times = {"native": [], "xla": []}
        for _ in range(rounds):
            for name, fn in (("native", native), ("xla", xla)):
                run = lambda fn=fn, args=args: fn(*args).block_until_ready()  # noqa: E731
                times[name].append(median(time_calls(run, repeats=repeats)) * 1e3)
        rows.append(
            {
                "kind": kind,
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
                r["kind"].replace("_", " "),
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
        ["**per step**", "", "", str(len(calls)), f"{total_xla:.2f}", f"{total_native:.2f}", ""]
    )
    header = [
        "call",
        "input (B x H x W, C -> Co)",
        "stride",
        "calls/step",
        "XLA ms",
        "native ms",
        "speed-up",
    ]
    devices = jax.device_count()
    lines = [
        "# Native 3x3 convolution kernels vs XLA's, per layer",
        "",
        f"`{args.formulation}` train step, {' '.join(overrides)}, {devices} CPU device(s): the "
        "calls the compiled step makes to `posejax.kernels` (forward passes and stride-1 input "
        "gradients, per device; weight gradients when the batch is not split), each timed alone "
        "as the native call and as XLA's (`lax.conv_general_dilated`, or its weight gradient "
        f"through `jax.vjp`); median of {args.rounds} alternating rounds of "
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
