"""2D convolution with a faster forward pass and backward on CPU.

Three CPU paths, each taken because XLA:CPU's own lowering measured slower:

* **Native 3x3 convolutions.** 3x3 float32 convolutions with stride 1 or 2, paddings 0..2 and
  a multiple of 16 output channels (every 3x3 layer of the backbone and heads but the bf16
  ones) run forward on :func:`posejax.kernels.conv3x3`, an XLA FFI call (1.95 -> 1.08 ms for
  16 images of 48x36x16 -> 16 on one core). Their input gradient, at stride 1 with SAME
  padding and a multiple of 16 input channels, is the same kernel: the input gradient of such
  a convolution is the convolution of the output gradient with the kernel flipped in space and
  transposed in channels. Their weight gradient is :func:`posejax.kernels.conv3x3_weight_grad`
  (one device only: see below).
* **The weight gradient of the others** (1x1 laterals, heads' outputs; every layer when the
  kernels are missing). XLA:CPU transposes the layer input from ``(B, H, W, C)`` to
  ``(C, H, W, B)`` (the input's channels become the batch of a convolution that contracts over
  the batch). It fuses the elementwise work that produced the input (the previous GroupNorm,
  bias or ReLU) into that transpose, and such a fused transpose is emitted as a plain loop:
  5.3 ms for a 32x24x18x64 activation on one core, against 0.7 ms for the same transpose of an
  array that already exists, and it made a fifth of the default heatmap step. Nothing at the JAX
  level stops that fusion (optimisation barriers are expanded before fusion; a divide is
  rewritten to a multiply). So on CPU the backward here does the transpose as a matmul with the
  identity (``einsum('bhwc,bk->hwck')``; a dot reads its operand from memory, and multiplying by
  1 and adding exact zeros returns every normal float bit for bit; subnormals are flushed to
  zero, as in every XLA:CPU matmul), then runs the weight gradient as an ordinary convolution
  on the transposed input, which XLA takes as it is.
* **The batch split over several devices** (:func:`batch_split_over_devices`): the native
  forward and input-gradient calls run per device (``shard_map`` over the batch) and the weight
  gradients are XLA's, which the step sums over the devices in one all-reduce.

Without the kernels (not built, another CPU, ``POSEJAX_NATIVE_KERNELS=0``) the first path is
``lax``'s; on other backends (GPU, TPU) everything is (``lax.platform_dependent``).
``tests/models/test_conv.py`` checks values and both gradients against ``lax`` on every path.

Used through :class:`Conv`, an ``nnx.Conv`` with the same parameters.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from posejax import kernels

_NHWC = ("NHWC", "HWIO", "NHWC")

# The mesh whose devices split the batch being traced, or None (set by the program that jits the
# train step). The identity matmul contracts over the batch; with the batch sharded, XLA
# gathers it across devices (the 2-device heatmap step: 500 -> 370 images/s). Then the weight
# gradient is left to XLA, which computes it per device (a per-device version through shard_map
# measured no faster: 470 against 460-500 images/s), and the native kernel runs per device.
_BATCH_SPLIT = contextvars.ContextVar("posejax_batch_split_over_devices", default=None)


@contextlib.contextmanager
def batch_split_over_devices(mesh: Mesh | None):
    """While tracing under this context, the batch is split over all axes of ``mesh`` (None: not
    split): convolutions take XLA's weight gradient and run the native kernel per device."""
    token = _BATCH_SPLIT.set(mesh)
    try:
        yield
    finally:
        _BATCH_SPLIT.reset(token)


def _native(x, w, strides, pads):
    """:func:`posejax.kernels.conv3x3`, per device when the batch is split."""
    conv = functools.partial(kernels.conv3x3, strides=strides, pads=pads)
    mesh = _BATCH_SPLIT.get()
    if mesh is None:
        return conv(x, w)
    batch = P(mesh.axis_names)
    return jax.shard_map(conv, mesh=mesh, in_specs=(batch, P()), out_specs=batch, check_vma=False)(
        x, w
    )


def _takes_native(x_shape, w_shape, dtype, strides, pads) -> bool:
    """Whether the native kernel computes this convolution (see :func:`kernels.conv3x3`)."""
    return (
        kernels.conv3x3_supports(x_shape, w_shape, dtype, strides, pads)
        and kernels.conv3x3_available()
    )


def _pads(padding, in_hw, kernel_hw, strides):
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding))
    return tuple(tuple(p) for p in padding)


def _weight_grad_cpu(x, dy, kernel_hw, strides, pads):
    """``d loss / d w`` of a stride-``strides`` NHWC/HWIO convolution, from its input ``x``
    ``(B, H, W, Ci)`` and output gradient ``dy`` ``(B, Ho, Wo, Co)``; ``(kh, kw, Ci, Co)``."""
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    # (H, W, Ci, B), the dot's natural output order: Ci is the batch of the convolution below,
    # B its contracted feature dimension.
    x_t = jnp.einsum("bhwc,bk->hwck", x, eye)
    # dw[u, v, i, o] = sum_{b, p, q} x_pad[b, p*s + u, q*s + v, i] dy[b, p, q, o]: a convolution
    # of x_t with dy as its kernel, dilated by the stride.
    dw = lax.conv_general_dilated(
        x_t,
        dy,
        window_strides=(1, 1),
        padding=pads,
        rhs_dilation=strides,
        dimension_numbers=("HWNC", "IHWO", "NHWC"),
    )
    kh, kw = kernel_hw
    return jnp.transpose(dw[:, :kh, :kw], (1, 2, 0, 3))  # (kh, kw, Ci, Co)


@functools.cache
def _conv(strides: tuple, padding):
    """Convolution of ``(x, w)`` with the given strides and padding (a string or pairs)."""

    def plain(x, w):
        return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)

    def forward(x, w):
        pads = _pads(padding, x.shape[1:3], w.shape[:2], strides)
        if not _takes_native(x.shape, w.shape, x.dtype, strides, pads):
            return plain(x, w)
        native = functools.partial(_native, strides=strides, pads=pads)
        return lax.platform_dependent(x, w, cpu=native, default=plain)

    @jax.custom_vjp
    def conv(x, w):
        return forward(x, w)

    def fwd(x, w):
        return forward(x, w), (x, w)

    def bwd(residuals, dy):
        x, w = residuals
        _, vjp = jax.vjp(plain, x, w)
        pads = _pads(padding, x.shape[1:3], w.shape[:2], strides)
        # The input gradient of a stride-1 SAME 3x3 convolution: the same convolution of dy with
        # the kernel flipped in space and its channels swapped (needs Ci % 16 == 0).
        same = ((1, 1), (1, 1))
        flipped_shape = (*w.shape[:2], w.shape[3], w.shape[2])
        native_dx = tuple(strides) == (1, 1) and tuple(pads) == same
        native_dx = native_dx and _takes_native(dy.shape, flipped_shape, dy.dtype, strides, same)

        def input_grad_cpu(x, w, dy):
            if not native_dx:
                return vjp(dy)[0]
            return _native(dy, jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2)), (1, 1), same)

        if _BATCH_SPLIT.get() is not None:
            # XLA's, computed per device and summed in the step's one gradient all-reduce. The
            # native kernel per device needs a sum over the devices per layer, and those
            # all-reduces cost more than the kernel saves (2-device heatmap step: 441-454
            # against 486-503 images/s, 3 alternating pairs).

            def weight_grad_cpu(x, w, dy):
                return vjp(dy)[1]

        elif _takes_native(x.shape, w.shape, x.dtype, strides, pads):

            def weight_grad_cpu(x, w, dy):
                return kernels.conv3x3_weight_grad(x, dy, strides, pads)

        else:

            def weight_grad_cpu(x, w, dy):
                return _weight_grad_cpu(x, dy, w.shape[:2], strides, pads).astype(w.dtype)

        def on_cpu(x, w, dy):
            return input_grad_cpu(x, w, dy), weight_grad_cpu(x, w, dy)

        return lax.platform_dependent(x, w, dy, cpu=on_cpu, default=lambda x, w, dy: vjp(dy))

    conv.defvjp(fwd, bwd)
    return conv


def conv2d(x: jax.Array, w: jax.Array, strides=(1, 1), padding="SAME") -> jax.Array:
    """NHWC input, HWIO kernel; the same as ``lax.conv_general_dilated`` with those layouts."""
    if isinstance(padding, list | tuple):
        padding = tuple(tuple(p) for p in padding)
    return _conv(tuple(strides), padding)(x, w)


def _conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    **kwargs,
):
    """``nnx.Conv``'s convolution: :func:`conv2d` for what it covers (2D, NHWC/HWIO, no
    dilation, no groups, default precision), ``lax.conv_general_dilated`` otherwise."""
    plain = (
        lhs.ndim == 4
        and all(d in (None, 1) for d in (lhs_dilation or ()) + (rhs_dilation or ()))
        and feature_group_count == 1
        and kwargs.get("precision") is None
        and kwargs.get("preferred_element_type") is None
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            **kwargs,
        )
    return conv2d(lhs, rhs, window_strides, padding)


class Conv(nnx.Conv):
    """``nnx.Conv`` on :func:`conv2d` (same parameters and results; faster backward on CPU)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("conv_general_dilated", _conv_general_dilated)
        super().__init__(*args, **kwargs)
