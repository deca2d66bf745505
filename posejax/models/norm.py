"""GroupNorm (Wu & He, "Group Normalization", ECCV 2018), optionally fused with a ReLU, with a
hand-written backward pass.

Why not ``flax.nnx.GroupNorm``: its forward is the same, but the gradient JAX derives for it
makes XLA:CPU fuse the recomputed normalisation into reductions over batch and space
(``dscale``, ``dbias``) and into the transposes that feed the weight-gradient convolutions;
those fusions ran at ~12 ns per element on one core, and on a profile of the default heatmap
step (one core, ``benchmarks/profile_step.py``) reductions and transposes took 0.47 of the step
against 0.42 for every convolution together. The backward here keeps the normalised input
(``xhat``) and the output from the forward pass and reduces over space first, per (sample,
channel): two plain reductions and one elementwise pass, whatever the backend. Heatmap step,
one device, 2 cores (``benchmarks/bench_vs_torch.py``): 284 -> 319 images/s; the transposes are
:mod:`posejax.models.conv`'s business, the reductions also need YNNPACK (``posejax.xla_flags``).

Same parameters (``scale``, ``bias``, one per channel), same epsilon and the same one-pass
variance as ``nnx.GroupNorm``'s defaults (``E[x^2] - E[x]^2``, statistics in float32), so a
checkpoint of either loads into the other; ``tests/models/test_norm.py`` checks values and
gradients against it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


def _over_groups(per_channel: jax.Array, groups: int) -> jax.Array:
    """``(B, C)`` per-channel sums -> ``(B, 1, C)``: each channel holds its group's total."""
    b, c = per_channel.shape
    totals = per_channel.reshape(b, groups, c // groups).sum(-1)
    return jnp.repeat(totals, c // groups, axis=1)[:, None]


def _stats(x: jax.Array, groups: int, eps: float):
    """Per (sample, group) mean and 1/std of ``x`` ``(B, N, C)``; both ``(B, 1, C)`` float32,
    repeated over the channels of each group."""
    b, n, c = x.shape
    x32 = x.astype(jnp.float32)
    # Over space first (a reduction per sample and channel), then over the channels of a group.
    count = n * (c // groups)
    mean = _over_groups(jnp.sum(x32, axis=1), groups) / count
    mean_sq = _over_groups(jnp.sum(x32 * x32, axis=1), groups) / count
    var = jnp.maximum(mean_sq - mean * mean, 0.0)
    return mean, jax.lax.rsqrt(var + eps)


def _forward(x, scale, bias, groups, eps, relu):
    mean, rstd = _stats(x, groups, eps)
    xhat = (x.astype(jnp.float32) - mean) * rstd
    y = xhat * scale + bias
    if relu:
        y = jnp.maximum(y, 0.0)
    return y.astype(x.dtype), xhat, rstd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _group_norm(x, scale, bias, groups, eps, relu):
    return _forward(x, scale, bias, groups, eps, relu)[0]


def _group_norm_fwd(x, scale, bias, groups, eps, relu):
    y, xhat, rstd = _forward(x, scale, bias, groups, eps, relu)
    return y, (y, xhat, rstd, scale)


def _group_norm_bwd(groups, eps, relu, residuals, dy):
    y, xhat, rstd, scale = residuals
    _, n, c = xhat.shape
    dy = dy.astype(jnp.float32)
    if relu:
        dy = jnp.where(y > 0, dy, 0.0)
    sum_dy = jnp.sum(dy, axis=1)  # (B, C)
    sum_dy_xhat = jnp.sum(dy * xhat, axis=1)  # (B, C)
    dbias = jnp.sum(sum_dy, axis=0)
    dscale = jnp.sum(sum_dy_xhat, axis=0)
    count = n * (c // groups)
    mean_dxhat = _over_groups(sum_dy * scale, groups) / count
    mean_dxhat_xhat = _over_groups(sum_dy_xhat * scale, groups) / count
    dx = rstd * (dy * scale - mean_dxhat - xhat * mean_dxhat_xhat)
    return dx.astype(y.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


_group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


def group_norm(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    groups: int,
    eps: float = 1e-6,
    relu: bool = False,
) -> jax.Array:
    """GroupNorm of ``x`` ``(B, ..., C)`` over its spatial axes and ``groups`` channel groups,
    then ``* scale + bias`` (``(C,)`` each) and, with ``relu``, ``max(., 0)``."""
    c = x.shape[-1]
    if c % groups:
        raise ValueError(f"group_norm: {c} channels do not split into {groups} groups")
    flat = x.reshape(x.shape[0], -1, c)
    return _group_norm(flat, scale, bias, groups, eps, relu).reshape(x.shape)


class GroupNorm(nnx.Module):
    """:func:`group_norm` as a module; parameters ``scale`` (ones) and ``bias`` (zeros), as in
    ``nnx.GroupNorm``. ``relu=True`` applies a ReLU in the same op."""

    def __init__(
        self,
        num_features: int,
        *,
        num_groups: int,
        epsilon: float = 1e-6,
        relu: bool = False,
        dtype=jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        del rngs  # deterministic initialisation; accepted for the nnx module signature
        if num_features % num_groups:
            raise ValueError(
                f"GroupNorm: {num_features} channels do not split into {num_groups} groups"
            )
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
        self.num_groups = num_groups
        self.epsilon = epsilon
        self.relu = relu
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        return group_norm(
            x.astype(self.dtype),
            self.scale[...],
            self.bias[...],
            groups=self.num_groups,
            eps=self.epsilon,
            relu=self.relu,
        )
