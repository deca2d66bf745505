"""posejax.kernels: the native 3x3 convolution and its weight gradient agree with lax, are used
where they apply, and their FLOPs are counted as XLA counts a convolution's."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from posejax import kernels

NHWC = ("NHWC", "HWIO", "NHWC")


def _cpu_has_avx512f() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and "avx512f" in cpuinfo.read_text().split()


def test_the_kernel_is_built_and_used_where_the_cpu_supports_it():
    """`make setup` builds the library on x86-64; it loads exactly where AVX-512F exists."""
    expected = platform.machine() == "x86_64" and _cpu_has_avx512f()
    assert kernels.conv3x3_available() is expected
    if expected:
        assert kernels.LIBRARY.stat().st_mtime >= (
            Path(kernels.__file__).with_name("conv3x3_cpu.cc").stat().st_mtime
        ), "the built kernel is older than its source: run `make setup`"


needs_kernel = pytest.mark.skipif(
    not kernels.conv3x3_available(), reason="no AVX-512F CPU here (checked by the test above)"
)

CASES = [
    # (batch, height, width, in, out, stride, pads)
    (2, 9, 7, 16, 16, 1, ((1, 1), (1, 1))),
    (3, 48, 36, 16, 16, 1, ((1, 1), (1, 1))),  # the backbone's widest thin layer (2 row tiles)
    (2, 24, 18, 32, 32, 1, ((1, 1), (1, 1))),
    (2, 12, 9, 64, 64, 1, ((1, 1), (1, 1))),
    (1, 6, 5, 96, 96, 1, ((1, 1), (1, 1))),
    (2, 5, 31, 17, 112, 1, ((1, 1), (1, 1))),  # 7 vectors: blocks of 4 and 3; odd channels
    (1, 1, 1, 16, 16, 1, ((1, 1), (1, 1))),  # every tap but the centre on the padding
    (4, 96, 72, 3, 16, 2, ((0, 1), (0, 1))),  # the stem: SAME for stride 2, even size
    (2, 9, 7, 3, 16, 2, ((1, 1), (1, 1))),  # SAME for stride 2, odd size
    (3, 10, 9, 16, 32, 2, ((0, 0), (0, 0))),  # VALID
    (2, 11, 8, 5, 48, 2, ((1, 0), (2, 1))),  # asymmetric
    (1, 4, 4, 1, 16, 1, ((2, 2), (0, 2))),  # wide padding, outputs beyond the image
]


@needs_kernel
@pytest.mark.parametrize("b, h, w_, ci, co, stride, pads", CASES)
def test_values_match_lax(b, h, w_, ci, co, stride, pads):
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (b, h, w_, ci))
    w = jax.random.normal(keys[1], (3, 3, ci, co))
    ours = jax.jit(lambda x, w: kernels.conv3x3(x, w, (stride, stride), pads))(x, w)
    theirs = lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=NHWC)
    assert ours.shape == theirs.shape
    # Sums of up to 9 * 112 unit-variance products: float32 rounding only.
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


@needs_kernel
@pytest.mark.parametrize("b, h, w_, ci, co, stride, pads", CASES)
def test_weight_gradient_matches_lax(b, h, w_, ci, co, stride, pads):
    keys = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(keys[0], (b, h, w_, ci))
    w = jax.random.normal(keys[1], (3, 3, ci, co))

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=NHWC)

    y, vjp = jax.vjp(conv, x, w)
    dy = jax.random.normal(keys[2], y.shape)
    ours = jax.jit(lambda x, dy: kernels.conv3x3_weight_grad(x, dy, (stride, stride), pads))
    theirs = vjp(dy)[1]
    # Sums over up to 4 * 96 * 72 / 4 unit-variance products, in another order than XLA's.
    scale = float(jnp.abs(theirs).max())
    np.testing.assert_allclose(ours(x, dy), theirs, rtol=1e-5, atol=1e-5 * scale)


@needs_kernel
def test_weight_gradient_sums_every_image_once():
    """With more images than pool threads, the per-chunk partial sums add up to the sum of
    the per-image gradients."""
    x = jax.random.normal(jax.random.key(4), (7, 6, 5, 16))
    dy = jax.random.normal(jax.random.key(5), (7, 6, 5, 32))
    grad = jax.jit(kernels.conv3x3_weight_grad)
    per_image = sum(grad(x[i : i + 1], dy[i : i + 1]) for i in range(7))
    np.testing.assert_allclose(grad(x, dy), per_image, rtol=1e-5, atol=1e-4)


def test_weight_gradient_refuses_an_output_gradient_of_another_shape():
    x, dy = jnp.zeros((2, 8, 8, 16)), jnp.zeros((2, 4, 4, 16))
    with pytest.raises(ValueError, match=r"dy \[2, 4, 4, 16\] is not the output shape \[2, 8, 8"):
        kernels.conv3x3_weight_grad(x, dy)


@needs_kernel
def test_under_vmap_each_element_is_its_own_call():
    x = jax.random.normal(jax.random.key(6), (3, 2, 6, 5, 16))
    w = jax.random.normal(jax.random.key(7), (3, 3, 3, 16, 16))
    mapped = jax.jit(jax.vmap(kernels.conv3x3))(x, w)
    for i in range(3):
        np.testing.assert_allclose(mapped[i], kernels.conv3x3(x[i], w[i]), rtol=1e-6)
    dy = jnp.ones_like(mapped)
    grads = jax.vmap(kernels.conv3x3_weight_grad)(x, dy)
    np.testing.assert_allclose(grads[1], kernels.conv3x3_weight_grad(x[1], dy[1]), rtol=1e-6)


@needs_kernel
def test_images_split_over_threads_each_land_in_their_place():
    """A batch larger than the thread pool: every image's output is its own (no image is
    computed twice or skipped by the claiming of chunks)."""
    x = jax.random.normal(jax.random.key(1), (7, 8, 8, 16))
    w = jax.random.normal(jax.random.key(2), (3, 3, 16, 16))
    whole = jax.jit(kernels.conv3x3)(x, w)
    for i in range(7):
        np.testing.assert_allclose(whole[i], jax.jit(kernels.conv3x3)(x[i : i + 1], w)[0])


@pytest.mark.parametrize(
    "x_shape, w_shape, strides, pads, dtype",
    [
        ((1, 5, 5, 4), (3, 3, 4, 17), (1, 1), ((1, 1), (1, 1)), jnp.float32),  # Co % 16
        ((1, 5, 5, 4), (3, 3, 4, 16), (3, 3), ((1, 1), (1, 1)), jnp.float32),  # stride 3
        ((1, 5, 5, 4), (3, 3, 4, 16), (1, 1), ((3, 1), (1, 1)), jnp.float32),  # padding 3
        ((1, 5, 5, 4), (5, 5, 4, 16), (1, 1), ((2, 2), (2, 2)), jnp.float32),  # 5x5
        ((1, 5, 5, 4), (3, 3, 4, 16), (1, 1), ((1, 1), (1, 1)), jnp.bfloat16),
    ],
)
def test_what_it_does_not_take_is_refused_with_the_shapes(x_shape, w_shape, strides, pads, dtype):
    assert not kernels.conv3x3_supports(x_shape, w_shape, dtype, strides, pads)
    x, w = jnp.zeros(x_shape, dtype), jnp.zeros(w_shape, dtype)
    with pytest.raises(ValueError, match=r"conv3x3: expected float32 .* got x"):
        kernels.conv3x3(x, w, strides, pads)


@needs_kernel
@pytest.mark.parametrize(
    "shape, stride, padding",
    [((3, 10, 9, 16), 1, "SAME"), ((2, 9, 7, 16), 2, "SAME"), ((2, 11, 8, 16), 2, "VALID")],
)
def test_flops_are_counted_as_xla_counts_a_convolution(shape, stride, padding):
    from posejax.models.conv import conv2d

    x, w = jnp.ones(shape), jnp.ones((3, 3, shape[3], 32))
    native = jax.jit(lambda x, w: conv2d(x, w, (stride, stride), padding)).lower(x, w).compile()
    assert "posejax_conv3x3" in native.as_text()
    plain = jax.jit(
        lambda x, w: lax.conv_general_dilated(
            x, w, (stride, stride), padding, dimension_numbers=NHWC
        )
    )
    expected = plain.lower(x, w).compile().cost_analysis()["flops"]
    assert kernels.conv3x3_flops(native.as_text()) == expected > 0


def test_switched_off_by_the_environment_variable():
    """POSEJAX_NATIVE_KERNELS=0: no native call in the compiled convolution, lax's instead."""
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        from posejax import kernels
        from posejax.models.conv import conv2d
        x, w = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 16))
        text = jax.jit(conv2d).lower(x, w).compile().as_text()
        print(kernels.conv3x3_available(), "posejax_conv3x3" in text, "convolution" in text)
        """
    )
    env = {**os.environ, "POSEJAX_NATIVE_KERNELS": "0"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False", "True"]


MULTI_DEVICE = """
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P
from posejax.models.conv import batch_split_over_devices, conv2d

# As posejax.train.program.make_mesh builds it.
mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
rows = NamedSharding(mesh, P("data"))
keys = jax.random.split(jax.random.key(0), 3)
for stride in (1, 2):
    x = jax.device_put(jax.random.normal(keys[0], (8, 12, 9, 16)), rows)
    w = jax.random.normal(keys[1], (3, 3, 16, 32))

    def ours(x, w, dy):
        with batch_split_over_devices(mesh):
            y, vjp = jax.vjp(lambda x, w: conv2d(x, w, (stride, stride), "SAME"), x, w)
        return (y, *vjp(dy))

    def theirs(x, w, dy):
        f = lambda x, w: lax.conv_general_dilated(
            x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(dy))

    y_shape = (8, -(-12 // stride), -(-9 // stride), 32)
    dy = jax.device_put(jax.random.normal(keys[2], y_shape), rows)
    step = jax.jit(ours)
    assert "posejax_conv3x3" in step.lower(x, w, dy).compile().as_text()
    for a, b in zip(step(x, w, dy), theirs(x, w, dy), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    # Each device ran its own rows: the output keeps the batch sharding.
    assert step(x, w, dy)[0].sharding.spec[0] == "data"
print("ok")
"""


@needs_kernel
@pytest.mark.multidevice
def test_batch_split_over_devices_runs_the_kernel_per_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"


@needs_kernel
@pytest.mark.parametrize("b, h, w_, ci, co, stride, pads", CASES[7:])
def test_calls_are_read_back_from_the_compiled_program(b, h, w_, ci, co, stride, pads):
    """conv3x3_calls recovers each call's shapes, stride and a padding that gives lax the same
    output (what benchmarks/bench_conv.py re-times)."""
    x, w = jnp.ones((b, h, w_, ci)), jnp.ones((3, 3, ci, co))
    fn = jax.jit(lambda x, w: kernels.conv3x3(x, w, (stride, stride), pads) * 2)
    (call,) = kernels.conv3x3_calls(fn.lower(x, w).compile().as_text())
    assert call["kind"] == "forward"
    assert call["x_shape"] == x.shape and call["w_shape"] == w.shape
    assert call["strides"] == (stride, stride) and call["pads"][0][0] == pads[0][0]
    out = lax.conv_general_dilated(x, w, call["strides"], call["pads"], dimension_numbers=NHWC)
    assert call["out_shape"] == out.shape == fn(x, w).shape
