"""Training state and the model/optimizer it is built from.

Parameters live in the state as plain nested dicts of arrays (``nnx.to_pure_dict``) so the
pure train step, orbax and the sharding specs all see one ordinary pytree; the module structure
(``graphdef``) stays outside as a static value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct


@struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      step: number of optimizer updates applied so far (int32 scalar).
      params: pure-dict parameters of the ``PoseModel``.
      opt_state: optax state for ``params``.
      skipped_steps: updates skipped because the loss or gradients were not finite.
      first_bad_step: the first such step, -1 if none.
      bad_terms: ``(T,)`` bool, which logged terms were non-finite at ``first_bad_step``.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    skipped_steps: jax.Array
    first_bad_step: jax.Array
    bad_terms: jax.Array


class ModelDef:
    """The static half of the model: rebuilds a ``PoseModel`` from pure-dict parameters."""

    def __init__(self, model: nnx.Module):
        self.graphdef, params, self._rest = nnx.split(model, nnx.Param, ...)
        self._abstract_params = jax.tree.map(lambda x: x, params)
        self.initial_params = nnx.to_pure_dict(params)

    def apply(self, params: Any, images: jax.Array):
        state = jax.tree.map(lambda x: x, self._abstract_params)
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self.graphdef, state, self._rest)(images)


def jitted_predict(model_def: ModelDef, params: Any) -> Callable[[jax.Array], Any]:
    """``images (B, h, w, 3) uint8 -> outputs`` of the model at ``params``, jitted.

    The parameters are an argument of the compiled program, not constants folded into it, so
    they stay on the device and compiling does not copy them.
    """
    apply = jax.jit(model_def.apply)
    return lambda images: apply(params, images)


def init_state(params: Any, optimizer: optax.GradientTransformation, num_terms: int) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        skipped_steps=jnp.zeros((), jnp.int32),
        first_bad_step=jnp.full((), -1, jnp.int32),
        bad_terms=jnp.zeros((num_terms,), bool),
    )


def count_params(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
