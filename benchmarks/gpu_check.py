"""The accelerator check behind ``benchmarks/gpu_check.sh``: step rates, MFU, one short run.

For each GPU preset (ResNet-18 top-down heatmaps at 256x192, batch 128, as
``experiment=coco_topdown_heatmap``; ResNet-18 PAF at 368x368, batch 32, as
``experiment=coco_bottomup_paf``; both on the synthetic dataset) and each precision (fp32, bf16)
it builds the training loop's own jitted step (``benchmarks/common.Trainer``), and reports:

* compile seconds, images/s (median over rounds, pre-read batches);
* FLOPs per step from XLA's cost analysis of the compiled step
  (``jit(step).lower(...).compile().cost_analysis()["flops"]``) and the achieved FLOP/s;
* model FLOP utilisation (MFU) against the chip's dense peak for that precision (a table of
  spec sheets by device kind; fp32 counts against the TF32 peak, since XLA:GPU runs float32
  convolutions and dots on TF32 tensor cores by default) and against a measured large matmul.

Then it trains one short run end to end (``posejax.train.loop.train`` in this process, as
``python -m posejax.train`` does: data pipeline, evaluation, checkpoint) and reads the loop's
images/s from its ``metrics.jsonl``. Everything goes to ``<out>/gpu_check.json`` and
``<out>/gpu_check.md``.

``--cpu-smoke`` runs the same code on tiny sizes (``backbone=tiny``, ``data=synthetic_tiny``) on
CPU in seconds, so the tests can check the script without a GPU.

Run:  bash benchmarks/gpu_check.sh [--cpu-smoke] [--out DIR]   (installs, then calls this)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from common import (
    ROOT,
    Trainer,
    compose_config,
    data_dir_override,
    markdown_table,
    median,
    write_report,
)

# Dense (no sparsity) peak FLOP/s per precision from the vendors' spec sheets. First match wins.
PEAKS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"bf16": 756e12, "fp32": 378e12}),
    ("H100", {"bf16": 989e12, "fp32": 495e12}),
    ("H200", {"bf16": 989e12, "fp32": 495e12}),
    ("GH200", {"bf16": 989e12, "fp32": 495e12}),
    ("A100", {"bf16": 312e12, "fp32": 156e12}),
    ("L40S", {"bf16": 362e12, "fp32": 183e12}),
    ("L4", {"bf16": 121e12, "fp32": 60e12}),
    ("A10", {"bf16": 125e12, "fp32": 62.5e12}),
    ("V100", {"bf16": 125e12, "fp32": 15.7e12}),  # no bf16 tensor cores: fp16's number
]

PRESETS = {
    "heatmap_resnet18_256x192": [
        "experiment=coco_topdown_heatmap",
        "data=synthetic",
        "data.top_down.input_size=[256,192]",
        "trainer.batch_size=128",
    ],
    "paf_resnet18_368x368": [
        "experiment=coco_bottomup_paf",
        "data=synthetic",
        "data.bottom_up.input_size=[368,368]",
        "trainer.batch_size=32",
    ],
}
SMOKE_PRESETS = {
    "heatmap_tiny_32x24": ["formulation=heatmap", "trainer.batch_size=4"],
    "paf_tiny_64x64": ["formulation=paf_quick", "trainer.batch_size=2"],
}
SMOKE_COMMON = ["backbone=tiny", "data=synthetic_tiny"]

TRAIN_RUN = {
    "trainer.log_every": 50,
    "trainer.eval_every": 1000000,  # the final evaluation only
    "trainer.checkpoint_every": 1000000,  # the final checkpoint only
    "trainer.eval_images": 200,
    "trainer.final_eval_images": 200,
    "trainer.num_visualize": 4,
    "trainer.tensorboard": "false",
    "trainer.progress": "false",
}
SMOKE_TRAIN_RUN = TRAIN_RUN | {
    "trainer.log_every": 2,
    "trainer.eval_images": 8,
    "trainer.final_eval_images": 8,
    "trainer.num_visualize": 0,
}


def spec_peak(device_kind: str, precision: str) -> float | None:
    for name, peaks in PEAKS:
        if name.lower() in device_kind.lower():
            return peaks[precision]
    return None


def measured_matmul_peak(precision: str, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of a jitted ``n x n`` matmul in the precision's compute dtype."""
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def measure_step(overrides: list[str], *, steps: int, rounds: int) -> dict:
    """Compile and time the loop's train step of one config on pre-read batches."""
    trainer = Trainer(compose_config(overrides))
    iterator = trainer.iterator()
    batches = [trainer.shard(next(iterator)) for _ in range(2)]
    start = time.perf_counter()
    flops = trainer.step_flops()  # compiles the step
    compile_s = time.perf_counter() - start
    step, state, rng = trainer.compiled_step, trainer.state, jax.random.key(0)

    def run(n: int) -> float:
        nonlocal state
        start = time.perf_counter()
        for i in range(n):
            state, metrics = step(state, batches[i % len(batches)], rng)
        jax.block_until_ready((state, metrics))
        return (time.perf_counter() - start) / n

    run(2)  # warm-up (autotuning, allocator)
    step_s = median([run(steps) for _ in range(rounds)])
    batch = trainer.batch_size
    return {
        "input_size": list(trainer.setup.data.pipeline.input_size),
        "batch_size": batch,
        "parameters": int(sum(x.size for x in jax.tree.leaves(state.params))),
        "compile_s": compile_s,
        "step_ms": 1e3 * step_s,
        "images_per_sec": batch / step_s,
        "flops_per_step": flops,
        "achieved_flops_per_sec": flops / step_s,
    }


def train_end_to_end(overrides: list[str], run_dir: Path) -> dict:
    """One run of the training loop (``posejax.train.loop.train``, what ``python -m
    posejax.train`` calls) from scratch; the loop's images/s and the final metrics."""
    from posejax.train.loop import train

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run, never a resumed one
    start = time.perf_counter()
    final = train(compose_config(overrides), run_dir)
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_sec"] for r in rows if "images_per_sec" in r]
    return {
        "command": " ".join(["python", "-m", "posejax.train", *overrides, f"run_dir={run_dir}"]),
        "run_dir": str(run_dir),
        "wall_s": seconds,
        # The first interval includes compilation: the steady rate is the last logged one.
        "images_per_sec_logged": rates,
        "images_per_sec": rates[-1] if rates else float("nan"),
        "final_metrics": {k: v for k, v in final.items() if "/" not in k},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes, CPU, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=None, help="default 3 (smoke: 2)")
    parser.add_argument("--train-steps", type=int, default=None, help="end-to-end run length")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: the repo's data/")
    parser.add_argument("--skip-train", action="store_true", help="no end-to-end run")
    args = parser.parse_args()

    smoke = args.cpu_smoke
    backend = jax.default_backend()
    if not smoke and backend != "gpu":
        print(
            f"gpu_check: JAX sees no GPU (backend {backend!r}); install jax[cuda12] or use "
            "--cpu-smoke",
            file=sys.stderr,
        )
        return 2
    data = [f"data.data_dir={args.data_dir}"] if args.data_dir else data_dir_override()
    presets = SMOKE_PRESETS if smoke else PRESETS
    common = [*data, *(SMOKE_COMMON if smoke else ["data.num_workers=12"])]
    steps = args.steps or (2 if smoke else 20)
    rounds = args.rounds or (2 if smoke else 3)
    device = jax.devices()[0]
    precisions = ["fp32", "bf16"]
    matmul_n = 256 if smoke else 8192
    measured_peak = {p: measured_matmul_peak(p, matmul_n) for p in precisions}

    rows = []
    for name, overrides in presets.items():
        for precision in precisions:
            row = {
                "preset": name,
                "precision": precision,
                "overrides": [*overrides, f"trainer.precision={precision}"],
                **measure_step(
                    [*common, *overrides, f"trainer.precision={precision}"],
                    steps=steps,
                    rounds=rounds,
                ),
            }
            peak = spec_peak(device.device_kind, precision)
            row["spec_peak_flops_per_sec"] = peak
            row["mfu_spec"] = row["achieved_flops_per_sec"] / peak if peak else None
            row["mfu_measured_matmul"] = row["achieved_flops_per_sec"] / measured_peak[precision]
            rows.append(row)
            print(
                f"{name} {precision}: {row['images_per_sec']:.1f} img/s, "
                f"{row['achieved_flops_per_sec'] / 1e12:.2f} TFLOP/s, MFU "
                + (f"{row['mfu_spec']:.1%}" if peak else "n/a (unknown chip)"),
                flush=True,
            )

    training = None
    if not args.skip_train:
        first = next(iter(presets))
        train_steps = args.train_steps or (4 if smoke else 300)
        overrides = [*common, *presets[first], "trainer.precision=bf16"]
        run_settings = {"trainer.steps": train_steps} | (SMOKE_TRAIN_RUN if smoke else TRAIN_RUN)
        overrides += [f"{k}={v}" for k, v in run_settings.items()]
        training = {"preset": first, "precision": "bf16", "steps": train_steps}
        training |= train_end_to_end(overrides, args.out / "train_run")
        print(f"end-to-end run: {training['images_per_sec']:.1f} img/s in the loop", flush=True)

    def pct(x):
        return "n/a" if x is None else f"{x:.1%}"

    table = [
        "# GPU check: train steps of the GPU presets" + (" (CPU smoke run)" if smoke else ""),
        "",
        f"{device.device_kind} ({backend}); synthetic data; loop's jitted step on pre-read "
        f"batches, median of {rounds} rounds of {steps} steps. MFU: XLA cost-analysis FLOPs "
        "per step / step time / the chip's dense peak (fp32 against TF32) and / a measured "
        f"{matmul_n}x{matmul_n} matmul ("
        + ", ".join(f"{p} {v / 1e12:.1f} TFLOP/s" for p, v in measured_peak.items())
        + ").",
        "",
        *markdown_table(
            [
                "preset",
                "precision",
                "input",
                "batch",
                "compile s",
                "ms/step",
                "images/s",
                "GFLOP/step",
                "TFLOP/s",
                "MFU (spec)",
                "MFU (matmul)",
            ],
            [
                [
                    r["preset"],
                    r["precision"],
                    "x".join(map(str, r["input_size"])),
                    str(r["batch_size"]),
                    f"{r['compile_s']:.0f}",
                    f"{r['step_ms']:.1f}",
                    f"{r['images_per_sec']:.1f}",
                    f"{r['flops_per_step'] / 1e9:.1f}",
                    f"{r['achieved_flops_per_sec'] / 1e12:.2f}",
                    pct(r["mfu_spec"]),
                    pct(r["mfu_measured_matmul"]),
                ]
                for r in rows
            ],
        ),
    ]
    if training:
        table += [
            "",
            f"End to end: `{training['command']}` ({training['steps']} steps, "
            f"{training['wall_s']:.0f} s with start-up and evaluation): "
            f"{training['images_per_sec']:.1f} images/s in the loop; final PCK@0.2 "
            f"{training['final_metrics'].get('PCK@0.2', float('nan')):.3f}.",
        ]
    write_report(
        "gpu_check",
        {
            "settings": {k: str(v) for k, v in vars(args).items()},
            "backend": backend,
            "device_kind": device.device_kind,
            "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "measured_matmul_peak_flops_per_sec": measured_peak,
            "rows": rows,
            "training": training,
        },
        table,
        out=args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
