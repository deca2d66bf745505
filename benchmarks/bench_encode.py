"""Target encoding time per batch, per formulation (the jitted ``formulation.encode``).

The encoder runs inside the compiled train step (targets are made on the device, not in the
input pipeline); this measures it alone: one real training batch of the default config
(``data=synthetic`` multi, default batch size), ``jax.jit(formulation.encode)``, the median
of ``--repeats`` calls after a warm-up call that compiles it. The share of the train step it
takes is reported against ``bench_train.json`` when that file exists.

Run:  .venv/bin/python benchmarks/bench_encode.py [--formulations ...] [overrides...]
(writes benchmarks/results/bench_encode.json and .md)
"""

from __future__ import annotations

import argparse
import json

import jax
from common import (
    RESULTS,
    compose_config,
    data_dir_override,
    formulations,
    markdown_table,
    median,
    open_train_split,
    split_overrides,
    time_calls,
    write_report,
)
from hydra.utils import get_class

from posejax.data.pipeline import make_train_iterator
from posejax.runs.setup import build_formulation, data_config


def encode_time(name: str, *, repeats: int, overrides=()) -> dict:
    cfg = compose_config([f"formulation={name}", *data_dir_override(), *overrides])
    mode = get_class(cfg.formulation._target_).input_mode
    batch_size = int(cfg.trainer.batch_size)
    data = data_config(
        cfg, mode, batch_size=batch_size, eval_batch_size=batch_size, seed=int(cfg.trainer.seed)
    )
    formulation = build_formulation(
        cfg, stride=int(cfg.backbone.output_stride), input_size=data.pipeline.input_size
    )
    batch = next(make_train_iterator(open_train_split(data), data.pipeline))
    device_batch = jax.device_put(batch)
    encode = jax.jit(formulation.encode)
    times = time_calls(
        lambda: jax.block_until_ready(encode(device_batch)), repeats=repeats, warmup=2
    )
    targets = jax.eval_shape(formulation.encode, device_batch)
    return {
        "formulation": name,
        "mode": mode,
        "batch_size": batch_size,
        "input_size": list(data.pipeline.input_size),
        "targets": {
            "/".join(str(getattr(k, "key", k)) for k in path): list(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(targets)
        },
        "encode_ms": 1e3 * median(times),
        "encode_ms_min": 1e3 * min(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formulations", nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every formulation")
    args = parser.parse_args()
    split_overrides(args)

    train_json = RESULTS / "bench_train.json"
    step_ms = {}
    if train_json.exists():
        step_ms = {
            r["formulation"]: r["step_ms"] for r in json.loads(train_json.read_text())["rows"]
        }
    rows = []
    for name in args.formulations or formulations():
        row = encode_time(name, repeats=args.repeats, overrides=args.overrides)
        if name in step_ms:
            row["train_step_ms"] = step_ms[name]
            row["fraction_of_train_step"] = row["encode_ms"] / step_ms[name]
        rows.append(row)
        print(f"{name}: {row['encode_ms']:.2f} ms per batch of {row['batch_size']}", flush=True)

    table = [
        "# Target encoding time per batch",
        "",
        "`jax.jit(formulation.encode)` on one training batch of the default config"
        + "".join(f" {o}" for o in args.overrides)
        + f'; median of {args.repeats} calls. "of train step": against '
        "the step time in bench_train.json (run separately; the machine is shared).",
        "",
        *markdown_table(
            [
                "formulation",
                "input",
                "batch",
                "targets",
                "encode ms",
                "ms per image",
                "of train step",
            ],
            [
                [
                    r["formulation"],
                    "x".join(map(str, r["input_size"])),
                    str(r["batch_size"]),
                    ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in r["targets"].items()),
                    f"{r['encode_ms']:.2f}",
                    f"{r['encode_ms'] / r['batch_size']:.3f}",
                    f"{r['fraction_of_train_step']:.1%}" if "fraction_of_train_step" in r else "-",
                ]
                for r in rows
            ],
        ),
    ]
    write_report("bench_encode", {"settings": vars(args), "rows": rows}, table)


if __name__ == "__main__":
    main()
