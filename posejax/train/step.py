"""The pure train step (jitted with its shardings by :mod:`posejax.train.program`).

``train_step(state, batch, rng) -> (state, metrics)`` knows nothing about which formulation it
trains: it calls the formulation's ``encode`` (targets built on device, inside the compiled
step) and ``loss``. A step whose loss, terms or gradient norm are not finite is *not applied*
(parameters and optimizer state stay as they were) and is recorded in the state, so the host can
stop with the step and the offending term at the next logging point without a per-step sync.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from posejax.formulations.base import Formulation
from posejax.runs.state import ModelDef, TrainState


def loss_term_names(formulation: Formulation, model_def: ModelDef, batch_spec) -> list[str]:
    """Names of the formulation's logged terms, found by tracing shapes only."""

    def terms(params, batch):
        outputs = model_def.apply(params, batch["image"])
        return formulation.loss(outputs, formulation.encode(batch))[1]

    return sorted(jax.eval_shape(terms, model_def.initial_params, batch_spec))


def monitored_names(term_names: Sequence[str]) -> list[str]:
    """Order of the values checked for finiteness (``TrainState.bad_terms``)."""
    return ["loss", "grad_norm", *term_names]


def make_train_step(
    model_def: ModelDef,
    formulation: Formulation,
    optimizer: optax.GradientTransformation,
    term_names: Sequence[str],
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        # ``rng`` is the run's key, the same every step; a stochastic layer would take
        # ``jax.random.fold_in(rng, state.step)``, inside the compiled step (the loop used to
        # dispatch a fold_in per step, ~0.8 ms of its thread). None does today.
        del rng

        def loss_fn(params):
            outputs = model_def.apply(params, batch["image"])
            loss, terms = formulation.loss(outputs, formulation.encode(batch))
            return loss, terms

        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.global_norm(grads)
        checked = jnp.stack([loss, grad_norm, *[terms[n] for n in term_names]])
        bad = ~jnp.isfinite(checked)
        ok = ~bad.any()
        updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)

        def keep_if_ok(new, old):
            return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)

        first_bad = jnp.where((state.first_bad_step < 0) & ~ok, state.step, state.first_bad_step)
        new_state = state.replace(
            step=state.step + 1,
            params=keep_if_ok(new_params, state.params),
            opt_state=keep_if_ok(new_opt_state, state.opt_state),
            skipped_steps=state.skipped_steps + (~ok).astype(jnp.int32),
            first_bad_step=first_bad,
            bad_terms=jnp.where(state.first_bad_step < 0, bad, state.bad_terms),
        )
        # A skipped step adds nothing to the logged means (the loop divides by applied_steps).
        metrics = {"loss": loss, "grad_norm": grad_norm, **terms}
        metrics = {k: jnp.where(ok, v, 0.0) for k, v in metrics.items()}
        metrics["applied_steps"] = ok.astype(jnp.float32)
        return new_state, metrics

    return train_step
