"""The oracle of every formulation config: targets laid out as outputs decode to the input.

Parametrised over ``conf/formulation/*.yaml``, so a new formulation is checked by adding its
YAML: ``oracle_outputs`` must have exactly the structure, shapes and dtypes of the head's
outputs, and (top-down) decoding it must give back the labelled keypoints of person 0.
"""

from __future__ import annotations

import pathlib

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from omegaconf import OmegaConf
from top_down_batches import INPUT_SIZE, make_batch

from posejax.formulations.base import TOP_DOWN

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf" / "formulation"
STRIDE = 4
# Decoding tolerance in input pixels: sub-pixel decoders, and a centroid on 1-map-pixel discs.
TOLERANCE = {"regression": 1e-3, "heatmap": 0.3, "segmentation": STRIDE}
# Segmentation paints joint discs in turn: only a joint whose disc no other disc can cover is
# recoverable exactly (joints closer than this, in input pixels, are not checked).
ISOLATION = {"regression": 0.0, "heatmap": 0.0, "segmentation": 2.0 * STRIDE + 1.0}


def build(name: str):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    if "defaults" in cfg:  # a preset on top of another formulation file
        base = OmegaConf.load(CONF / f"{cfg.defaults[0]}.yaml")
        cfg = OmegaConf.merge(base, {k: v for k, v in cfg.items() if k != "defaults"})
    return hydra.utils.instantiate(cfg, stride=STRIDE, input_size=INPUT_SIZE)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF.glob("*.yaml")))
def test_oracle_outputs_have_the_heads_layout_and_decode_to_the_targets(name):
    formulation = build(name)
    batch = make_batch(seed=3)
    if formulation.input_mode == TOP_DOWN:  # the pipeline's top-down crops hold one person
        batch = {
            k: v[:, :1] if k in ("keypoints", "boxes", "valid") else v for k, v in batch.items()
        }
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    targets = jax.jit(formulation.encode)(batch)
    oracle = formulation.oracle_outputs(targets)

    head = formulation.make_head(8, rngs=nnx.Rngs(0))
    h, w = formulation.map_size
    outputs = head(jnp.zeros((batch["image"].shape[0], h, w, 8), jnp.float32))
    spec = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
    assert spec(oracle) == spec(outputs)

    predictions = formulation.decode(jax.device_get(oracle))
    assert len(predictions) == batch["image"].shape[0]
    if formulation.input_mode != TOP_DOWN:
        return  # bottom-up round trips on crowds: tests/formulations/test_paf_formulation.py
    person = np.asarray(batch["keypoints"])[:, 0]
    valid = np.asarray(batch["valid"])[:, 0]
    for b, prediction in enumerate(predictions):
        if not valid[b]:
            continue
        kind = type(formulation).__module__.rsplit(".", 1)[-1]
        labelled = person[b, :, 2] > 0
        xy = person[b, :, :2]
        gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
        gaps[np.eye(len(xy), dtype=bool) | ~labelled[None, :]] = np.inf
        checked = labelled & (gaps.min(axis=1) >= ISOLATION[kind])
        assert checked.any()
        error = np.abs(prediction.poses[0, checked, :2] - xy[checked])
        assert error.max() <= TOLERANCE[kind], name
