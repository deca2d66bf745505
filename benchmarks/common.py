"""Shared pieces of the benchmark scripts: configs, the compiled train step, timing, reports.

Not a benchmark itself. Every ``bench_*.py`` builds what it measures from the same Hydra configs
and the same program as ``python -m posejax.train`` (``posejax.train.program``), so a number here
describes the code that trains, not a copy of it.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
RESULTS = Path(__file__).resolve().parent / "results"


def formulations() -> list[str]:
    """Every formulation with a config file (``conf/formulation/*.yaml``)."""
    return sorted(p.stem for p in (CONF_DIR / "formulation").glob("*.yaml"))


def split_overrides(args) -> None:
    """Hydra overrides given after ``--formulations`` (``--formulations heatmap key=value``)
    land in that list; move them to ``args.overrides``, where they belong."""
    names = args.formulations or []
    args.overrides = [n for n in names if "=" in n] + list(args.overrides)
    args.formulations = [n for n in names if "=" not in n] or None


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def data_dir_override() -> list[str]:
    """The repository's ``data/`` (where ``make data`` builds), unless $POSEJAX_DATA_DIR is set."""
    return [] if "POSEJAX_DATA_DIR" in os.environ else [f"data.data_dir={ROOT / 'data'}"]


_SOURCES: dict[tuple, object] = {}


def open_train_split(data, needs=None):
    """The training split of a ``DataConfig``, opened once per process (top-down pipelines
    index every person of the split on first use, which takes seconds); ``needs``: the batch
    keys read, as in ``posejax.data.splits.open_split`` (the loop passes its formulation's)."""
    from posejax.data.splits import open_split

    needs = None if needs is None else tuple(needs)
    key = (data.builder, data.config, repr(data.config_overrides), data.data_dir, needs)
    if key not in _SOURCES:
        _SOURCES[key] = open_split(data, data.train_split, needs=needs)
    return _SOURCES[key]


class Trainer:
    """The training loop's program of one config (``posejax.train.program.build_program``, as
    ``posejax.train.loop.run`` builds it) and its training data.

    Attributes:
      setup: the ``Setup`` built from the config.
      source: the training split (random access).
      program: the loop's ``Program``: jitted ``train_step`` with the loop's shardings, jitted
        ``predict``, ``batch_spec``, ``schedule``, ...
      state: the train state, initially the program's (replicated); benchmarks advance it.
    """

    def __init__(self, cfg):
        from posejax.runs.setup import build_setup
        from posejax.train.distributed import set_cpu_devices
        from posejax.train.program import build_program, make_mesh

        # As the loop does it (before the first Trainer starts the backend; later ones must
        # agree, or JAX refuses).
        set_cpu_devices(cfg.distributed.get("cpu_devices"))
        self.setup = build_setup(cfg)
        self.source = open_train_split(self.setup.data, self.setup.formulation.batch_keys)
        iterator = self.iterator()
        self.program = build_program(self.setup, make_mesh(), next(iterator))
        close_iterator(iterator)
        self.state = self.program.state

    @property
    def batch_size(self) -> int:
        return self.setup.trainer.batch_size

    @property
    def step(self):
        """Jitted ``(state, batch, rng) -> (state, metrics)`` (``compiled_step`` is the same,
        compiled ahead of time)."""
        return self.program.train_step

    def iterator(self):
        from posejax.data.pipeline import make_train_iterator

        return make_train_iterator(self.source, self.setup.data.pipeline)

    def shard(self, batch):
        return self.program.shard(batch)

    @functools.cached_property
    def compiled_step(self):
        """The train step compiled ahead of time: call it like ``step``; its cost analysis
        gives the FLOPs (compiling once serves both)."""
        rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
        return self.step.lower(self.state, self.program.batch_spec, rng).compile()

    def step_flops(self) -> float:
        """FLOPs of one train step from XLA's cost analysis of the compiled program, plus those
        of the native convolutions it calls, which the analysis counts as zero
        (``posejax.kernels.conv3x3_flops``). Both count one device's share when the batch is
        split: times the devices of the mesh."""
        from posejax.kernels import conv3x3_flops

        compiled = self.compiled_step
        flops = cost_flops(compiled) + conv3x3_flops(compiled.as_text())
        return flops * self.program.batch_sharding.mesh.size


def close_iterator(iterator) -> None:
    """Grain iterators with worker processes must be closed; plain ones have no close()."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def cost_flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def time_calls(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` (which must block until done)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(values) -> float:
    return float(statistics.median(values))


def matmul_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Measured dense float32 matmul FLOP/s of the default device (best of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    times = time_calls(lambda: matmul(a, b).block_until_ready(), repeats=repeats, warmup=2)
    return 2.0 * n**3 / min(times)


def machine() -> dict:
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "load_average_1_5_15_min": os.getloadavg(),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_report(name: str, report: dict, table: list[str], *, out: Path = RESULTS) -> None:
    """``out/<name>.json`` (``report`` + run metadata) and ``out/<name>.md`` (``table`` + notes)."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(ROOT):
        script = script.relative_to(ROOT)
    report = {
        "benchmark": name,
        "command": " ".join(["python", str(script), *sys.argv[1:]]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        **report,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    m = report["machine"]
    footer = (
        f"Produced by `{report['command']}` on {report['date']}: {m['device_count']} "
        f"{m['device_kind']} device(s) ({m['jax_backend']}), {m['cpu_count']} CPU cores "
        f"({m['processor']}), load average {m['load_average_1_5_15_min'][0]:.1f}."
    )
    (out / f"{name}.md").write_text("\n".join([*table, "", footer]) + "\n")
    print("\n".join(table))
    print(f"wrote {out / (name + '.json')} and {name}.md")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = [" :--- "] + [" ---: "] * (len(header) - 1)  # names left, numbers right
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines
