"""posejax.models.conv: the same convolution as lax, with the weight gradient computed
through an identity matmul and an ordinary convolution on CPU, and 3x3 forward passes and input
gradients on the native kernel where it applies (see the module docstring)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from posejax import kernels
from posejax.models.conv import Conv, batch_split_over_devices, conv2d

CASES = [
    # (batch, height, width, in, out, kernel, stride, padding)
    (4, 9, 7, 3, 5, 3, 1, "SAME"),
    (4, 9, 7, 3, 5, 3, 2, "SAME"),
    (2, 8, 8, 4, 6, 1, 2, "SAME"),
    (3, 10, 9, 2, 3, 3, 2, "VALID"),
    (2, 11, 8, 3, 4, 3, 2, ((1, 0), (2, 1))),
    (1, 6, 5, 2, 2, 5, 3, "SAME"),
    # The native kernel's (forward; input gradient too when in % 16 == 0 and stride 1).
    (2, 9, 7, 16, 16, 3, 1, "SAME"),
    (2, 9, 7, 3, 32, 3, 1, "SAME"),
    (3, 10, 9, 16, 32, 3, 2, "SAME"),
    (2, 11, 8, 16, 16, 3, 2, ((1, 0), (2, 1))),
]


def _lax(x, w, stride, padding):
    return lax.conv_general_dilated(
        x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("b, h, w_, ci, co, k, stride, padding", CASES)
def test_values_and_both_gradients_match_lax(b, h, w_, ci, co, k, stride, padding, split):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (b, h, w_, ci))
    w = jax.random.normal(keys[1], (k, k, ci, co))
    y = _lax(x, w, stride, padding)
    dy = jax.random.normal(keys[2], y.shape)

    # A one-device mesh takes the split path (XLA's weight gradient, the kernel in a shard_map).
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))

    def ours(x, w):
        with batch_split_over_devices(mesh if split else None):
            return jax.vjp(lambda x, w: conv2d(x, w, (stride, stride), padding), x, w)

    out, vjp = jax.jit(ours)(x, w) if not split else ours(x, w)
    if co % 16 == 0 and k == 3 and kernels.conv3x3_available():
        assert "posejax_conv3x3" in jax.jit(ours).lower(x, w).as_text()
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)
    expected = jax.vjp(lambda x, w: _lax(x, w, stride, padding), x, w)[1](dy)
    for name, e, g in zip(("x", "w"), expected, vjp(dy), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-4, err_msg=f"d/d{name}")


def test_the_identity_matmul_is_exact():
    """The weight gradient's transpose-by-matmul returns every normal float bit for bit, large
    or small; a subnormal input is flushed to zero, as XLA:CPU's matmuls do."""
    x = jax.random.normal(jax.random.key(3), (6, 5, 4, 3))
    x = x * jnp.logspace(-30, 30, 3)  # magnitudes 1e-30 .. 1e30
    moved = jnp.einsum("bhwc,bk->hwck", x, jnp.eye(6, dtype=x.dtype))
    np.testing.assert_array_equal(moved, jnp.transpose(x, (1, 2, 3, 0)))
    tiny = jnp.einsum("bc,bk->ck", jnp.full((2, 1), 1e-39), jnp.eye(2))
    assert float(jnp.abs(tiny).max()) in (0.0, 1e-39)


def test_nnx_conv_wrapper_has_the_same_parameters_and_output():
    ours = Conv(3, 4, (3, 3), strides=2, rngs=nnx.Rngs(0))
    theirs = nnx.Conv(3, 4, (3, 3), strides=2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 9, 9, 3))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    assert jax.tree.map(jnp.shape, nnx.state(ours, nnx.Param)) == jax.tree.map(
        jnp.shape, nnx.state(theirs, nnx.Param)
    )


def test_other_convolutions_fall_back_to_lax():
    """Grouped or dilated convolutions are lax's own (same values, gradients through JAX)."""
    dilated = Conv(4, 4, (3, 3), kernel_dilation=2, rngs=nnx.Rngs(0))
    grouped = Conv(4, 4, (3, 3), feature_group_count=2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (1, 8, 8, 4))
    for conv, kwargs in ((dilated, {"kernel_dilation": 2}), (grouped, {"feature_group_count": 2})):
        plain = nnx.Conv(4, 4, (3, 3), rngs=nnx.Rngs(0), **kwargs)
        np.testing.assert_allclose(conv(x), plain(x), rtol=1e-6, atol=1e-6)
