#!/usr/bin/env bash
# One prepared check for an accelerator machine (budget: under 8 minutes on one GPU).
#
#   bash benchmarks/gpu_check.sh [--cpu-smoke] [--out DIR] [more gpu_check.py options]
#
# 1. Python: the repository's .venv if present, else python3 (then `pip install -e .`).
# 2. JAX with CUDA: kept if JAX already sees a GPU; otherwise `pip install jax[cuda12]` pinned
#    to the installed jax version (skipped with --cpu-smoke, and harmless to fail offline: the
#    check then stops and says so).
# 3. benchmarks/gpu_check.py: fp32 and bf16 train steps of the GPU presets (ResNet-18 top-down
#    heatmaps 256x192, PAF 368x368), images/s and MFU from XLA's cost analysis, one short
#    end-to-end training run; JSON + markdown in --out (default benchmarks/results/gpu/).
#
# --cpu-smoke: the same code at tiny sizes on CPU (seconds), for tests/benchmarks/.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

smoke=0
for arg in "$@"; do
  [[ "$arg" == "--cpu-smoke" ]] && smoke=1
done

if [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=python3
  "$PY" -c "import posejax" 2>/dev/null || "$PY" -m pip install -q -e .
fi

if [[ $smoke == 1 ]]; then
  export JAX_PLATFORMS=cpu
else
  if ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
    version="$("$PY" -c 'import jax; print(jax.__version__)')"
    echo "gpu_check: JAX sees no GPU; installing jax[cuda12]==$version" >&2
    "$PY" -m pip install -q "jax[cuda12]==$version" ||
      echo "gpu_check: pip install failed (offline?); continuing with what is installed" >&2
  fi
  # Let XLA take what it needs instead of 75 % up front (the data workers share the host).
  export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
fi

exec "$PY" benchmarks/gpu_check.py "$@"
