"""XLA:CPU flag defaults, applied before JAX starts its CPU backend.

jaxlib 0.10.2 sends every convolution to a YNNPACK fusion, and those run on one thread: on a
2-core machine a 3x3 convolution (batch 32, 24x18, 64 -> 64 channels) took 12 ms forward and
40 ms forward + backward with 1 or 2 intra-op threads alike. With the YNNPACK fusion list set
to ``dot`` (dots only, convolutions back on XLA's multi-threaded Eigen kernels) the same took
6 ms and 20 ms on an idle machine; on a machine whose other core is busy the two are equal.
GPU and TPU backends ignore ``xla_cpu_*`` flags.

``import posejax`` calls :func:`apply_cpu_defaults` (before the first JAX computation); a flag
the user already put in ``XLA_FLAGS`` wins, and ``POSEJAX_XLA_DEFAULTS=0`` turns the defaults
off. Whole train steps, ``benchmarks/bench_train.py --formulations heatmap paf_quick``, two
alternating pairs of runs on 2 cores (2026-12-01): heatmap 96x72 199 / 238 images/s with the
default against 166 / 157 without, PAF 128x128 53 / 45 against 41 / 43.

Reductions go to YNNPACK as well (``dot,reduce``): XLA's own loop for a reduction over batch and
space that keeps the channels (a bias or GroupNorm-scale gradient) took 5.2 ms for a
32x24x18x64 array on one core, YNNPACK's 0.17 ms; the heatmap step went from 319 to 390
images/s on one device (``benchmarks/bench_vs_torch.py``, 2026-12-02).
"""

from __future__ import annotations

import os

CPU_DEFAULTS: dict[str, str] = {
    # YNNPACK for dots and reductions: convolutions multi-threaded through Eigen (see above).
    "xla_cpu_experimental_ynn_fusion_type": "dot,reduce",
}


def apply_cpu_defaults(environ: dict | None = None) -> str:
    """Add :data:`CPU_DEFAULTS` to ``XLA_FLAGS`` (unless already set there); returns the flags."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if environ.get("POSEJAX_XLA_DEFAULTS", "1") == "0":
        return flags
    extra = [f"--{k}={v}" for k, v in CPU_DEFAULTS.items() if f"--{k}=" not in flags]
    flags = " ".join([flags, *extra]).strip()
    environ["XLA_FLAGS"] = flags
    return flags
