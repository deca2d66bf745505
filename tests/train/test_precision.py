"""Mixed precision (``trainer.precision=bf16``): bf16 activations, float32 parameters and outputs.

The structural checks trace shapes only (``nnx.eval_shape`` / ``jax.eval_shape``: nothing is
compiled); one short end-to-end run checks that bf16 training starts where float32 does and
learns.
"""

from __future__ import annotations

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hydra import compose, initialize_config_dir
from train_worker import CONF_DIR, TINY_RUN, reference_run, train_in_subprocess

from posejax.models import PoseModel
from posejax.runs.setup import PRECISIONS, build_backbone, build_formulation

FORMULATIONS = sorted(p.stem for p in (CONF_DIR / "formulation").glob("*.yaml"))


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_bf16_computes_in_bf16_and_keeps_float32_parameters_and_outputs(formulation):
    cfg = compose_config(
        [
            f"formulation={formulation}",
            "backbone=tiny",
            "data=synthetic_tiny",
            "trainer.precision=bf16",
        ]
    )
    dtype = PRECISIONS[cfg.trainer.precision]
    mode = hydra.utils.get_class(cfg.formulation._target_).input_mode
    h, w = cfg.data[mode].input_size
    form = build_formulation(cfg, stride=int(cfg.backbone.output_stride), input_size=(h, w))

    def make_model():
        rngs = nnx.Rngs(0)
        backbone = build_backbone(cfg, dtype=dtype, rngs=rngs)
        return PoseModel(backbone, form.make_head(backbone.out_channels, rngs=rngs), dtype=dtype)

    graphdef, params, rest = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)
    images = jax.ShapeDtypeStruct((2, h, w, 3), jnp.uint8)

    def run(params, images, part):
        model = nnx.merge(graphdef, params, rest)
        if part == "features":
            return model.backbone(images.astype(dtype))
        return model(images)

    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    features = jax.eval_shape(lambda p, x: run(p, x, "features"), params, images)
    assert features.dtype == jnp.bfloat16
    outputs = jax.eval_shape(lambda p, x: run(p, x, "outputs"), params, images)
    assert {x.dtype for x in jax.tree.leaves(outputs)} == {jnp.dtype(jnp.float32)}


@pytest.mark.slow
def test_bf16_training_starts_like_float32_and_learns(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    fp32 = reference_run(base)  # same seed, data and first batch, float32
    steps = 24
    bf16 = train_in_subprocess(
        tmp_path_factory.mktemp("bf16") / "run",
        [
            *TINY_RUN,
            f"data.data_dir={base / 'data'}",
            "trainer.precision=bf16",
            f"trainer.steps={steps}",
            f"trainer.eval_every={steps}",
            f"trainer.checkpoint_every={steps}",
        ],
    )
    loss = bf16["loss"]
    assert len(loss) == steps and np.isfinite(loss).all()
    # Step 1 runs the same float32 parameters on the same batch: bf16 rounding only.
    np.testing.assert_allclose(loss[0], fp32["loss"][0], rtol=2e-2)
    assert loss[-5:].mean() < 0.7 * loss[:5].mean()
    params = {k: v for k, v in bf16.items() if k.startswith("params/")}
    assert params and {v.dtype for v in params.values()} == {np.dtype(np.float32)}
