"""Native CPU kernels, called from XLA through its FFI.

Two kernels of one 3x3 float32 convolution (stride 1 or 2) for x86-64 CPUs with AVX-512
(``conv3x3_cpu.cc``): the forward pass :func:`conv3x3` and the weight gradient
:func:`conv3x3_weight_grad`. XLA:CPU's own (Eigen) convolution is slow for the thin layers of
the CPU-sized backbone, and its weight gradient first transposes the input so that the batch is
minor. For 16 images of 48x36, 16 -> 16 channels, the forward pass took 1.95 ms in XLA and
1.08 ms here on one core (PyTorch's oneDNN: 1.09 ms; jitted calls, medians of 30, 2026-12-03);
``benchmarks/bench_conv.py`` times every call of a train step both ways.

The shared library is built by ``python -m posejax.kernels.build`` (``make setup`` runs it).
Where it is missing (not built, not x86-64, no AVX-512F, no C++ compiler at setup) or
``POSEJAX_NATIVE_KERNELS=0`` is set, :func:`conv3x3_available` is False and
``posejax.models.conv`` keeps XLA's convolutions: the results are the same to float32
rounding, only the speed differs.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

LIBRARY = Path(__file__).with_name("_conv3x3_cpu.so")
TARGET = "posejax_conv3x3"
WGRAD_TARGET = "posejax_conv3x3_wgrad"


@functools.cache
def conv3x3_available() -> bool:
    """Whether the kernels can run here (library built, CPU supported, not switched off).

    The first call registers the FFI targets with JAX.
    """
    if os.environ.get("POSEJAX_NATIVE_KERNELS", "1") == "0" or not LIBRARY.exists():
        return False
    try:
        library = ctypes.CDLL(str(LIBRARY))
    except OSError as error:
        raise RuntimeError(
            f"{LIBRARY} exists but does not load ({error}); rebuild it with "
            "`python -m posejax.kernels.build` or delete it"
        ) from error
    if not library.posejax_conv3x3_supported():
        return False
    for target in (TARGET, WGRAD_TARGET):
        handler = jax.ffi.pycapsule(getattr(library, target))
        jax.ffi.register_ffi_target(target, handler, platform="cpu")
    return True


def conv3x3_supports(x_shape, w_shape, dtype, strides=(1, 1), pads=((1, 1), (1, 1))) -> bool:
    """Whether the kernels take this convolution: NHWC float32 input, (3, 3, C, Co) kernel with
    Co a multiple of 16, equal strides of 1 or 2, every padding 0, 1 or 2."""
    return (
        len(x_shape) == 4
        and tuple(w_shape[:3]) == (3, 3, x_shape[3])
        and w_shape[3] % 16 == 0
        and dtype == jnp.float32
        and tuple(strides) in ((1, 1), (2, 2))
        and all(0 <= p <= 2 for pair in pads for p in pair)
    )


def _output_hw(x_shape, strides, pads) -> tuple[int, int]:
    s = strides[0]
    (top, bottom), (left, right) = pads
    return (x_shape[1] + top + bottom - 3) // s + 1, (x_shape[2] + left + right - 3) // s + 1


def _check(name, x, w_shape, w_dtype, strides, pads):
    pads = tuple(tuple(int(p) for p in pair) for pair in pads)
    if not conv3x3_supports(x.shape, w_shape, x.dtype, strides, pads) or w_dtype != x.dtype:
        raise ValueError(
            f"{name}: expected float32 x (B, H, W, C) and w (3, 3, C, Co) with Co % 16 == 0, "
            "strides (1, 1) or (2, 2) and paddings 0..2; got "
            f"x {x.dtype}{list(x.shape)}, w {w_dtype}{list(w_shape)}, "
            f"strides {tuple(strides)}, pads {pads}"
        )
    if not conv3x3_available():
        raise RuntimeError(
            f"{name}: the native kernel is not available ({LIBRARY} missing, "
            "POSEJAX_NATIVE_KERNELS=0, or a CPU without AVX-512F)"
        )
    (top, _), (left, _) = pads
    return {"stride": np.int64(strides[0]), "pad_top": np.int64(top), "pad_left": np.int64(left)}


def conv3x3(x: jax.Array, w: jax.Array, strides=(1, 1), pads=((1, 1), (1, 1))) -> jax.Array:
    """3x3 convolution of NHWC ``x (B, H, W, C)`` with HWIO ``w (3, 3, C, Co)``: float32,
    ``Co % 16 == 0``, ``strides`` (1, 1) or (2, 2), ``pads`` ((top, bottom), (left, right)) each
    0..2 (``lax.conv_general_dilated``'s explicit padding); ``(B, Ho, Wo, Co)``. CPU only, no
    gradient of its own (the caller, ``posejax.models.conv``, defines it); under ``jax.vmap``
    one call per mapped element."""
    attrs = _check("conv3x3", x, w.shape, w.dtype, strides, pads)
    out = jax.ShapeDtypeStruct(
        (x.shape[0], *_output_hw(x.shape, strides, pads), w.shape[3]), x.dtype
    )
    return jax.ffi.ffi_call(TARGET, out, vmap_method="sequential")(x, w, **attrs)


def conv3x3_weight_grad(x: jax.Array, dy: jax.Array, strides=(1, 1), pads=((1, 1), (1, 1))):
    """``d loss / d w`` of :func:`conv3x3` from its input ``x (B, H, W, C)`` and the gradient
    of its output ``dy (B, Ho, Wo, Co)``: ``(3, 3, C, Co)`` (same conditions as
    :func:`conv3x3`)."""
    w_shape = (3, 3, x.shape[3], dy.shape[3])
    attrs = _check("conv3x3_weight_grad", x, w_shape, dy.dtype, strides, pads)
    expected = (x.shape[0], *_output_hw(x.shape, strides, pads), dy.shape[3])
    if tuple(dy.shape) != expected:
        raise ValueError(
            f"conv3x3_weight_grad: dy {list(dy.shape)} is not the output shape {list(expected)} "
            f"of x {list(x.shape)} with strides {tuple(strides)} and pads {pads}"
        )
    out = jax.ShapeDtypeStruct(w_shape, x.dtype)
    return jax.ffi.ffi_call(WGRAD_TARGET, out, vmap_method="sequential")(x, dy, **attrs)


_SHAPE = r"f32\[([\d,]+)\]\S*"
_CALL = re.compile(
    rf"= {_SHAPE} custom-call\(.*custom_call_target=\"({TARGET}|{WGRAD_TARGET})\".*"
    rf"operand_layout_constraints=\{{{_SHAPE}, {_SHAPE}\}}.*"
    r"backend_config=\{pad_left = (\d+) : i64, pad_top = (\d+) : i64, stride = (\d+) : i64\}"
)


def _taps(size: int, out: int, stride: int, pad: int) -> int:
    """Kernel taps along one axis that land inside the input, summed over the outputs."""
    return sum(0 <= stride * o + t - pad < size for o in range(out) for t in range(3))


def conv3x3_calls(hlo_text: str) -> list[dict]:
    """The native calls in a compiled HLO module's text, in order: ``kind`` ("forward" or
    "weight_grad"), and the convolution's ``x_shape``, ``w_shape``, ``out_shape`` (of its
    forward pass), ``strides`` and ``pads`` (``pads`` as far as the text gives them: top and
    left; the output size sets bottom and right)."""
    shape = lambda text: tuple(map(int, text.split(",")))  # noqa: E731
    calls = []
    for result, target, x, second, pad_left, pad_top, stride in _CALL.findall(hlo_text):
        forward = target == TARGET
        out = shape(result) if forward else shape(second)
        kernel = shape(second) if forward else shape(result)
        s, (ho, wo) = int(stride), out[1:3]
        h, w = shape(x)[1:3]
        top, left = int(pad_top), int(pad_left)
        bottom, right = (ho - 1) * s + 3 - h - top, (wo - 1) * s + 3 - w - left
        calls.append(
            {
                "kind": "forward" if forward else "weight_grad",
                "x_shape": shape(x),
                "w_shape": kernel,
                "out_shape": out,
                "strides": (s, s),
                "pads": ((top, max(bottom, 0)), (left, max(right, 0))),
            }
        )
    return calls


def conv3x3_flops(hlo_text: str) -> float:
    """FLOPs of the native calls in a compiled HLO module's text (XLA's cost analysis counts a
    custom call as zero), counted as XLA counts a convolution's: 2 per multiply-add of a kernel
    tap inside the input (taps on the padding are not counted). A weight gradient has as many
    multiply-adds as its forward pass."""
    total = 0
    for call in conv3x3_calls(hlo_text):
        b, h, w, ci = call["x_shape"]
        _, ho, wo, co = call["out_shape"]
        s = call["strides"][0]
        (top, _), (left, _) = call["pads"]
        total += 2 * b * _taps(h, ho, s, top) * _taps(w, wo, s, left) * ci * co
    return float(total)
