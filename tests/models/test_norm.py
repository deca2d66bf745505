"""posejax.models.norm.GroupNorm against flax's nnx.GroupNorm: same values, same gradients.

The module exists for its hand-written backward (speed on XLA:CPU); these tests pin that the
backward is the derivative of the forward, with and without the fused ReLU, in float32 and with
bfloat16 activations, and that the parameters are the ones nnx.GroupNorm has.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posejax.models.norm import GroupNorm, group_norm


def _reference(x, scale, bias, groups, relu):
    ref = nnx.GroupNorm(x.shape[-1], num_groups=groups, rngs=nnx.Rngs(0))
    graph, params = nnx.split(ref)
    params["scale"][...] = scale
    params["bias"][...] = bias

    def apply(x, params):
        y = nnx.merge(graph, params)(x)
        return jax.nn.relu(y) if relu else y

    return apply, params


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape, groups", [((3, 6, 5, 16), 4), ((2, 7, 3, 12), 3), ((4, 9, 8), 8)])
def test_values_and_gradients_match_flax(shape, groups, relu):
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], shape) * 3.0 + 1.0
    c = shape[-1]
    scale = jax.random.normal(keys[1], (c,))
    bias = jax.random.normal(keys[2], (c,))
    weights = jax.random.normal(keys[3], shape)
    apply, params = _reference(x, scale, bias, groups, relu)

    def loss_ref(x, params):
        return (apply(x, params) * weights).sum()

    def loss(x, scale, bias):
        return (group_norm(x, scale, bias, groups=groups, relu=relu) * weights).sum()

    np.testing.assert_allclose(
        group_norm(x, scale, bias, groups=groups, relu=relu), apply(x, params), atol=2e-5
    )
    dx_ref, dparams_ref = jax.grad(loss_ref, argnums=(0, 1))(x, params)
    expected = (dx_ref, dparams_ref["scale"][...], dparams_ref["bias"][...])
    got = jax.grad(loss, argnums=(0, 1, 2))(x, scale, bias)
    for name, e, g in zip(("x", "scale", "bias"), expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4, err_msg=f"d/d{name}")


def test_gradient_matches_finite_differences():
    from jax.test_util import check_grads

    x = jax.random.normal(jax.random.key(1), (2, 4, 3, 8))
    scale = jnp.linspace(0.5, 1.5, 8)
    bias = jnp.linspace(-0.2, 0.3, 8)
    for relu in (False, True):
        check_grads(
            lambda x, s, b, relu=relu: group_norm(x, s, b, groups=2, relu=relu),
            (x, scale, bias),
            order=1,
            modes=["rev"],
            atol=2e-2,
            rtol=2e-2,
        )


def test_bfloat16_activations_keep_their_dtype():
    x = jax.random.normal(jax.random.key(2), (2, 5, 5, 8)).astype(jnp.bfloat16)
    norm = GroupNorm(8, num_groups=4, relu=True, dtype=jnp.bfloat16)
    y = norm(x)
    assert y.dtype == jnp.bfloat16
    reference = group_norm(
        x.astype(jnp.float32), norm.scale[...], norm.bias[...], groups=4, relu=True
    )
    np.testing.assert_allclose(y.astype(jnp.float32), reference, atol=0.05)
    grad = jax.grad(lambda x: norm(x).astype(jnp.float32).sum())(x)
    assert grad.dtype == jnp.bfloat16 and bool(jnp.isfinite(grad.astype(jnp.float32)).all())


def test_parameters_are_those_of_nnx_group_norm():
    ours = nnx.state(GroupNorm(12, num_groups=3), nnx.Param)
    theirs = nnx.state(nnx.GroupNorm(12, num_groups=3, rngs=nnx.Rngs(0)), nnx.Param)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, theirs)


def test_channels_that_do_not_split_into_groups_are_an_error():
    with pytest.raises(ValueError, match="10 channels do not split into 4 groups"):
        GroupNorm(10, num_groups=4)
    with pytest.raises(ValueError, match="10 channels do not split into 4 groups"):
        group_norm(jnp.ones((1, 2, 2, 10)), jnp.ones(10), jnp.zeros(10), groups=4)
