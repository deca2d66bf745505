"""The formulation contract (``posejax.formulations.base``), checked for every formulation config.

Parametrised over ``conf/formulation/*.yaml``, so a new formulation is checked by adding its
YAML. Each is built as the trainer builds it (``posejax.runs.setup.build_formulation`` on the
composed config; the model is the tiny backbone + the formulation's head) and checked for:

* outputs: ``jax.eval_shape`` of the model gives float32 outputs, ``(S, B, ...)`` for the
  declared ``staged_outputs`` and ``(B, ...)`` for the others; ``oracle_outputs`` has exactly
  that structure, those shapes and dtypes;
* batch keys: the declared ``batch_keys`` are batch keys of ``posejax.data.schema``, ``encode``
  needs nothing else (it runs on ``encoder_batch(batch)``), and a missing one is named;
* round trip: ``decode(oracle_outputs(encode(batch)))`` gives back person 0's labelled keypoints
  (top-down; bottom-up crowds round-trip in ``test_paf_formulation.py``), at every stage, and
  every target person's box (formulations that predict boxes); a formulation that declares no
  keypoints finds none, one that declares no boxes returns none;
* stages: ``decode`` and ``display_maps`` take ``stage`` in ``-S .. S - 1`` and reject others;
* loss: finite, lower on the oracle than on perturbed outputs;
* display maps: exactly the names of ``display_specs``, each laid out as its ``DisplayMap`` says;
* dense classes: ``num_dense_classes > 0`` exactly when there are dense predictions and targets,
  their values lie in ``[0, num_dense_classes)``, and the oracle's predictions are the targets.
"""

from __future__ import annotations

import functools
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hydra import compose, initialize_config_dir
from top_down_batches import INPUT_SIZE, make_batch

from posejax.data import schema
from posejax.formulations.base import DISPLAY_KINDS, TOP_DOWN
from posejax.models import PoseModel
from posejax.runs.setup import build_backbone, build_formulation

CONF = pathlib.Path(__file__).resolve().parents[2] / "conf"
NAMES = sorted(p.stem for p in (CONF / "formulation").glob("*.yaml"))
STRIDE = 4  # the tiny backbone's output stride
# Decoding tolerance in input pixels: sub-pixel decoders, and a centroid on 1-map-pixel discs
# (a formulation not listed gets half a map cell).
TOLERANCE = {"regression": 1e-3, "heatmap": 0.3, "segmentation": STRIDE}
# Segmentation paints joint discs in turn: only a joint whose disc no other disc can cover is
# recoverable exactly (joints closer than this, in input pixels, are not checked).
ISOLATION = {"segmentation": 2.0 * STRIDE + 1.0}


@functools.cache
def case(name: str) -> types.SimpleNamespace:
    """One formulation config, built as the trainer builds it, on a small synthetic batch."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"formulation={name}", "backbone=tiny"])
    assert cfg.backbone.output_stride == STRIDE
    formulation = build_formulation(cfg, stride=STRIDE, input_size=INPUT_SIZE)
    batch = make_batch(seed=3)
    if formulation.input_mode == TOP_DOWN:  # the pipeline's top-down crops hold one person
        batch = {
            k: v[:, :1] if k in ("keypoints", "boxes", "valid") else v for k, v in batch.items()
        }
    targets = jax.jit(formulation.encode)(formulation.encoder_batch(batch))

    def model():  # tiny backbone + this head, built abstractly (no parameters are made)
        rngs = nnx.Rngs(0)
        backbone = build_backbone(cfg, dtype=jnp.float32, rngs=rngs)
        return PoseModel(backbone, formulation.make_head(backbone.out_channels, rngs=rngs))

    graphdef, state = nnx.split(nnx.eval_shape(model))
    images = jax.ShapeDtypeStruct(batch["image"].shape, jnp.uint8)
    outputs = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, images)
    return types.SimpleNamespace(
        formulation=formulation,
        batch=batch,
        targets=jax.device_get(targets),
        oracle=jax.device_get(formulation.oracle_outputs(targets)),
        outputs=outputs,
    )


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of ``(N, 4)`` xywh boxes with one box."""
    x0 = np.maximum(boxes[:, 0], box[0])
    y0 = np.maximum(boxes[:, 1], box[1])
    x1 = np.minimum(boxes[:, 0] + boxes[:, 2], box[0] + box[2])
    y1 = np.minimum(boxes[:, 1] + boxes[:, 3], box[1] + box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (boxes[:, 2] * boxes[:, 3] + box[2] * box[3] - inter)


def spec(tree):
    return jax.tree.map(lambda x: (tuple(x.shape), np.dtype(x.dtype)), tree)


@pytest.mark.parametrize("name", NAMES)
def test_outputs_have_the_declared_layout_and_the_oracle_has_it_too(name):
    c = case(name)
    f, outputs, b = c.formulation, c.outputs, c.batch["image"].shape[0]
    assert isinstance(outputs, dict) and set(f.staged_outputs) <= set(outputs)
    for key, value in outputs.items():
        assert value.dtype == jnp.float32, key
        leading = (f.num_stages, b) if key in f.staged_outputs else (b,)
        assert value.shape[: len(leading)] == leading, (key, value.shape)
    assert spec(c.oracle) == spec(outputs)


@pytest.mark.parametrize("name", NAMES)
def test_encode_reads_only_the_declared_batch_keys(name):
    c = case(name)
    f = c.formulation
    assert f.batch_keys and set(f.batch_keys) <= set(schema.BATCH_KEYS), f.batch_keys
    assert set(f.encoder_batch(c.batch)) == set(f.batch_keys)  # and encode ran on just those
    missing = f.batch_keys[0]
    with pytest.raises(ValueError, match=missing):
        f.encoder_batch({k: v for k, v in c.batch.items() if k != missing})


@pytest.mark.parametrize("name", NAMES)
def test_oracle_decodes_to_the_targets_at_every_stage(name):
    c = case(name)
    f, batch = c.formulation, c.batch
    for stage in range(-f.num_stages, f.num_stages):
        predictions = f.decode(c.oracle, stage=stage)
        assert len(predictions) == batch["image"].shape[0]
        for prediction in predictions:
            assert prediction.poses.ndim == 3 and prediction.poses.shape[1:] == (f.num_keypoints, 3)
            assert prediction.scores.shape == prediction.poses.shape[:1]
            if f.predicts_boxes:
                assert prediction.boxes.shape == (len(prediction.scores), 4)
            else:
                assert prediction.boxes is None
            if not f.predicts_keypoints:
                assert not (prediction.poses[..., 2] > 0).any()
        if f.predicts_boxes:  # every target person's box comes back
            for b, prediction in enumerate(predictions):
                for box in np.asarray(batch["boxes"])[b][np.asarray(batch["valid"])[b]]:
                    assert box_iou(prediction.boxes, box).max() > 0.9, (name, box)
        if f.input_mode != TOP_DOWN or not f.predicts_keypoints:
            continue  # bottom-up round trips on crowds: tests/formulations/test_paf_formulation.py
        person = np.asarray(batch["keypoints"])[:, 0]
        valid = np.asarray(batch["valid"])[:, 0]
        kind = type(f).__module__.rsplit(".", 1)[-1]
        for b, prediction in enumerate(predictions):
            if not valid[b]:
                continue
            labelled = person[b, :, 2] > 0
            xy = person[b, :, :2]
            gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
            gaps[np.eye(len(xy), dtype=bool) | ~labelled[None, :]] = np.inf
            checked = labelled & (gaps.min(axis=1) >= ISOLATION.get(kind, 0.0))
            assert checked.any()
            error = np.abs(prediction.poses[0, checked, :2] - xy[checked])
            assert error.max() <= TOLERANCE.get(kind, STRIDE / 2), name


@pytest.mark.parametrize("name", NAMES)
def test_decode_and_display_maps_reject_a_stage_that_does_not_exist(name):
    c = case(name)
    f = c.formulation
    for stage in (f.num_stages, -f.num_stages - 1, 0.5, True):
        with pytest.raises(ValueError, match="stage"):
            f.decode(c.oracle, stage=stage)
        with pytest.raises(ValueError, match="stage"):
            f.display_maps(c.oracle, stage=stage)


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_and_lowest_at_the_oracle(name):
    c = case(name)
    f = c.formulation
    rng = np.random.default_rng(0)
    noisy = jax.tree.map(
        lambda x: x + np.float32(0.5) * rng.standard_normal(x.shape, np.float32), c.oracle
    )
    loss = jax.jit(f.loss)
    perfect, terms = loss(c.oracle, c.targets)
    perturbed, _ = loss(noisy, c.targets)
    assert perfect.shape == () and terms
    assert all(np.shape(v) == () and np.isfinite(v) for v in terms.values()), terms
    assert np.isfinite(perfect) and np.isfinite(perturbed)
    assert 0.0 <= perfect < perturbed


@pytest.mark.parametrize("name", NAMES)
def test_display_maps_are_what_their_specs_say(name):
    c = case(name)
    f = c.formulation
    b, (h, w) = c.batch["image"].shape[0], f.map_size
    for stage in range(-f.num_stages, f.num_stages):
        maps = f.display_maps(c.oracle, stage=stage)
        assert set(maps) == set(f.display_specs)
        for key, display in f.display_specs.items():
            value = np.asarray(maps[key])
            assert display.kind in DISPLAY_KINDS
            if display.kind == "labels":
                assert value.shape == (b, h, w) and np.issubdtype(value.dtype, np.integer), key
                assert 0 <= value.min() and value.max() < display.num_classes, key
            elif display.kind == "intensity":
                assert value.shape == (b, h, w) and np.issubdtype(value.dtype, np.floating), key
                assert np.isfinite(value).all(), key
            else:
                assert value.shape == (b, h, w, 3) and np.issubdtype(value.dtype, np.floating)
                assert 0.0 <= value.min() and value.max() <= 1.0, key


@pytest.mark.parametrize("name", NAMES)
def test_dense_classes_match_the_dense_maps(name):
    c = case(name)
    f = c.formulation
    predicted, truth = f.dense_predictions(c.oracle), f.dense_targets(c.targets)
    if not f.num_dense_classes:
        assert f.num_dense_classes == 0 and predicted is None and truth is None
        return
    b, (h, w) = c.batch["image"].shape[0], f.map_size
    for value in (predicted, truth):
        assert value.shape == (b, h, w) and np.issubdtype(value.dtype, np.integer)
        assert 0 <= value.min() and value.max() < f.num_dense_classes
    np.testing.assert_array_equal(predicted, truth)
