"""Build the native CPU kernels: ``python -m posejax.kernels.build`` (``make setup`` runs it).

Compiles ``conv3x3_cpu.cc`` against the XLA FFI headers that ship with jaxlib
(``jax.ffi.include_dir()``) into ``_conv3x3_cpu.so`` beside it. The code is AVX-512F
(``-march=x86-64-v4``); the library checks the CPU at load time. On another architecture, or
without a C++ compiler, it prints why it built nothing and exits 0: posejax then runs XLA's own
convolutions (same results, slower on CPU). ``CXX`` picks the compiler (default ``g++``).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

from posejax.kernels import LIBRARY

SOURCE = Path(__file__).with_name("conv3x3_cpu.cc")
FLAGS = ["-O3", "-std=c++17", "-march=x86-64-v4", "-shared", "-fPIC", "-Wall"]


def build(output: Path = LIBRARY) -> bool:
    """Compile the library into ``output``; False (with the reason printed) when it cannot."""
    if platform.machine() not in ("x86_64", "AMD64"):
        print(f"posejax.kernels: not built (x86-64 only; this is {platform.machine()})")
        return False
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        print("posejax.kernels: not built (no C++ compiler; set CXX): XLA's convolutions are used")
        return False
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        partial = Path(tmp) / output.name
        include = ["-isystem", jax.ffi.include_dir()]
        command = [compiler, *FLAGS, *include, str(SOURCE), "-o", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"posejax.kernels: compiling {SOURCE} failed:\n{' '.join(command)}\n{result.stderr}"
            )
        os.replace(partial, output)  # atomic: a concurrent reader sees the old or the new file
    print(f"posejax.kernels: built {output}")
    return True


if __name__ == "__main__":
    build()
    sys.exit(0)
