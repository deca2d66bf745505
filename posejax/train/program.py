"""What a training run compiles: the initial state, the jitted train step and predict, shardings.

``build_program(setup, mesh, example_batch)`` is the one place they are put together. The
training loop, the benchmarks (``benchmarks/common.py``) and the tests all build from it, so a
benchmark times, and a test checks, the step that trains.

Data parallelism: one mesh axis ``data`` (:func:`make_mesh`). Batches are sharded along it,
the state is replicated, and the compiler inserts the gradient all-reduce. The same program runs
on 1 device, N local devices, or N hosts (:meth:`Program.shard` assembles each host's rows into
one global batch).

Shape legend: ``B`` global batch (``trainer.batch_size``), ``h, w`` input size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from posejax.models.conv import batch_split_over_devices
from posejax.runs.optim import build_optimizer
from posejax.runs.setup import Setup
from posejax.runs.state import ModelDef, TrainState, init_state
from posejax.train.step import loss_term_names, make_train_step, monitored_names


def make_mesh() -> Mesh:
    """One ``data`` axis over every device of every host."""
    # Auto axes: shardings of intermediates are left to the compiler (only inputs are pinned).
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def shard_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Host-local batch -> global array sharded over the ``data`` axis (works multi-host).

    With one process the host's rows are the global batch: one ``device_put`` of the whole dict
    (0.32 ms for a top-down batch on 2 CPU devices, against 0.6-1.1 ms for an array at a time).
    """
    contiguous = {k: np.ascontiguousarray(v) for k, v in batch.items()}
    if jax.process_count() == 1:
        return jax.device_put(contiguous, sharding)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in contiguous.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """The compiled pieces of one training configuration.

    Attributes:
      model_def: the model's static half (rebuilds the ``PoseModel`` from parameters).
      state: the initial ``TrainState``, replicated over the mesh.
      train_step: jitted ``(state, batch, rng) -> (state, metrics)``; the state is donated, the
        batch sharded over ``data`` (:meth:`shard`).
      predict: jitted ``(params, images (B', h, w, 3) uint8) -> outputs`` (any batch size).
      encode: jitted ``formulation.encode`` (batch -> targets), for the evaluator's mIoU.
      schedule: the learning rate at an update step (what ``metrics.jsonl`` logs as ``lr``).
      batch_spec: ``name -> ShapeDtypeStruct`` of the global batch the step is traced for.
      term_names: the formulation's loss terms (sorted), logged beside ``loss``.
      monitored_names: the order of ``TrainState.bad_terms`` (``loss``, ``grad_norm``, terms).
      batch_sharding: batches split along the ``data`` axis.
      replicated: the state's sharding (every device holds all of it).
    """

    model_def: ModelDef
    state: TrainState
    train_step: Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]
    predict: Callable[[Any, jax.Array], Any]
    encode: Callable[[dict], dict]
    schedule: optax.Schedule
    batch_spec: dict[str, jax.ShapeDtypeStruct]
    term_names: tuple[str, ...]
    monitored_names: tuple[str, ...]
    batch_sharding: NamedSharding
    replicated: NamedSharding

    def shard(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This host's rows of a batch -> the global batch, sharded as the step expects."""
        return shard_batch(batch, self.batch_sharding)

    def replicate(self, state: TrainState) -> TrainState:
        """A state from elsewhere (a restored checkpoint) placed as the step expects."""
        return jax.device_put(state, self.replicated)


def build_program(setup: Setup, mesh: Mesh, example_batch: Mapping[str, Any]) -> Program:
    """Initial state, jitted train step and predict of ``setup``, data parallel over ``mesh``.

    Args:
      setup: the run's formulation, model, trainer and optimizer settings (``build_setup``).
      mesh: a mesh with a ``data`` axis (:func:`make_mesh`).
      example_batch: one host-local training batch, or ``ShapeDtypeStruct``s of one: only its
        keys, dtypes and per-example shapes are read (the batch layout depends on the dataset,
        e.g. whether it has part masks); the global batch size is ``trainer.batch_size``.

    Returns:
      The :class:`Program`; nothing is compiled until its functions are first called.
    """
    trainer, formulation = setup.trainer, setup.formulation
    model_def = ModelDef(setup.model)
    optimizer, schedule = build_optimizer(setup.optim, trainer.steps)
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    batch_spec = {
        k: jax.ShapeDtypeStruct((trainer.batch_size, *v.shape[1:]), v.dtype)
        for k, v in example_batch.items()
    }
    term_names = loss_term_names(formulation, model_def, batch_spec)
    checked = monitored_names(term_names)
    state = init_state(model_def.initial_params, optimizer, len(checked))
    step = make_train_step(model_def, formulation, optimizer, term_names)

    split = mesh.shape["data"] > 1

    def sharded_step(state, batch, rng):
        # The convolutions' backward depends on whether the batch is split (posejax.models.conv).
        with batch_split_over_devices(mesh if split else None):
            return step(state, batch, rng)

    train_step = jax.jit(
        sharded_step,
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    return Program(
        model_def=model_def,
        state=jax.device_put(state, replicated),
        train_step=train_step,
        predict=jax.jit(model_def.apply),
        encode=jax.jit(formulation.encode),
        schedule=schedule,
        batch_spec=batch_spec,
        term_names=tuple(term_names),
        monitored_names=tuple(checked),
        batch_sharding=batch_sharding,
        replicated=replicated,
    )
