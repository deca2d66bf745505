"""``build_program``: the state, train step and predict that the loop and benchmarks share."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from posejax.runs.setup import build_setup
from posejax.train.program import build_program, make_mesh

CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "conf"
BATCH = 4
INPUT_SIZE = (32, 24)  # data=synthetic_tiny's top-down input (h, w)


@pytest.fixture(scope="module")
def setup():
    overrides = [
        "formulation=heatmap",
        "backbone=tiny",
        "data=synthetic_tiny",
        f"trainer.batch_size={BATCH}",
        "optim.warmup_steps=0",  # the first update has a non-zero learning rate
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return build_setup(compose("config", overrides=overrides))


def crop_batch(seed: int = 0) -> dict[str, np.ndarray]:
    """A top-down batch in the pipeline's layout (``posejax.data.schema``): one person a crop."""
    rng = np.random.default_rng(seed)
    h, w = INPUT_SIZE
    xy = rng.uniform((2, 2), (w - 2, h - 2), (BATCH, 1, 17, 2)).astype(np.float32)
    visibility = np.full((BATCH, 1, 17, 1), 2.0, np.float32)
    return {
        "image": rng.integers(0, 256, (BATCH, h, w, 3), dtype=np.uint8),
        "keypoints": np.concatenate([xy, visibility], -1),
        "boxes": np.tile(np.float32([1, 1, w - 2, h - 2]), (BATCH, 1, 1)),
        "valid": np.ones((BATCH, 1), bool),
        "loss_mask": np.ones((BATCH, h, w), np.float32),
        "weight": np.ones((BATCH,), np.float32),
    }


def test_batch_spec_is_the_global_batch(setup):
    batch = crop_batch()
    spec_only = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    program = build_program(setup, make_mesh(), spec_only)
    assert program.batch_spec == {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()
    }
    assert program.term_names == ("heatmap_mse",)
    assert program.monitored_names == ("loss", "grad_norm", "heatmap_mse")
    assert program.state.bad_terms.shape == (len(program.monitored_names),)


def test_one_step_changes_the_parameters_and_returns_finite_terms(setup):
    batch = crop_batch()
    program = build_program(setup, make_mesh(), batch)
    before = jax.device_get(program.state.params)  # the step donates the state

    state, metrics = program.train_step(program.state, program.shard(batch), jax.random.key(0))

    assert set(metrics) == {"loss", "grad_norm", *program.term_names, "applied_steps"}
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert float(metrics["applied_steps"]) == 1.0
    assert int(state.step) == 1 and int(state.skipped_steps) == 0
    assert int(state.first_bad_step) == -1
    moved = [
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before), strict=True)
    ]
    assert max(moved) > 0.0
    assert float(program.schedule(0)) > 0.0


def test_predict_outputs_match_eval_shape(setup):
    program = build_program(setup, make_mesh(), crop_batch())
    params = program.state.params
    # Any batch size (the evaluator's), not only the training batch.
    images = crop_batch(1)["image"][:3]
    outputs = program.predict(params, images)
    expected = jax.eval_shape(program.model_def.apply, params, images)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), outputs)
    assert shapes == jax.tree.map(lambda x: (x.shape, x.dtype), expected)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(outputs))
    # The formulation decodes what predict returns (one pose list per image).
    poses = setup.formulation.decode(jax.device_get(outputs))
    assert len(poses) == 3
