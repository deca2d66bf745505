"""Body-part segmentation: target synthesis, round trip, loss, rendered source, one SGD step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from top_down_batches import INPUT_SIZE, B, K, make_batch

from posejax import geometry, skeleton
from posejax.formulations import segmentation as seg
from posejax.formulations.base import TOP_DOWN

STRIDE = 4
MAP_SIZE = (16, 12)


def formulation(**kwargs) -> seg.PartSegmentation:
    defaults = dict(stride=STRIDE, input_size=INPUT_SIZE, head_channels=16)
    return seg.PartSegmentation(**(defaults | kwargs))


@functools.cache
def _jitted(f: seg.PartSegmentation):
    return jax.jit(f.encode), jax.jit(f.loss)


def encode(f: seg.PartSegmentation, batch):
    """Jitted encode, compiled once per configuration (op by op is much slower)."""
    return _jitted(f)[0](batch)


def loss(f: seg.PartSegmentation, outputs, targets):
    return _jitted(f)[1](outputs, targets)


def perfect_outputs(targets) -> dict[str, jax.Array]:
    return {seg.LOGITS: 30.0 * jax.nn.one_hot(targets[seg.LABELS], seg.NUM_CLASSES)}


def test_class_layout():
    assert seg.NUM_CLASSES == 28 == seg.JOINT_CLASS_OFFSET + skeleton.NUM_KEYPOINTS
    assert skeleton.BODY_PARTS[seg.HEAD_CLASS] == "head"
    assert skeleton.BODY_PARTS[seg.TORSO_CLASS] == "torso"
    assert sorted(seg.LIMB_PAINT_ORDER) == sorted(skeleton.BODY_PART_SEGMENTS)
    assert formulation().input_mode == TOP_DOWN


def isolated_joints(keypoints: np.ndarray, radius: float) -> np.ndarray:
    """``(K,)`` labelled joints with no other labelled joint within ``2 radius`` map px."""
    labelled = keypoints[:, 2] > 0
    on_map = geometry.image_to_map(keypoints[:, :2], STRIDE)
    distance = np.linalg.norm(on_map[:, None] - on_map[None], axis=-1)
    both = labelled[:, None] & labelled[None] & ~np.eye(K, dtype=bool)
    return labelled & ~np.any(both & (distance <= 2 * radius), axis=1)


def test_targets_paint_every_part_of_a_fully_labelled_person():
    f = formulation()
    batch = make_batch(drop=0.0)
    targets = encode(f, batch)
    labels = np.asarray(targets[seg.LABELS])
    parts = np.asarray(targets[seg.PART_LABELS])
    assert labels.shape == parts.shape == (B, *MAP_SIZE) and labels.dtype == np.int32
    for b in range(B):
        assert set(np.unique(parts[b])) == set(range(seg.NUM_PART_CLASSES))
        # A disc no other disc can reach is there (face discs overlap at this small stride).
        isolated = isolated_joints(batch["keypoints"][b, 0], f.joint_radius)
        assert set(seg.JOINT_CLASS_OFFSET + np.flatnonzero(isolated)) <= set(np.unique(labels[b]))
        # Joint discs are painted over the part layer only.
        differs = labels[b] != parts[b]
        assert np.all(labels[b][differs] >= seg.JOINT_CLASS_OFFSET)


def test_round_trip_within_one_map_pixel():
    f = formulation()
    batch = make_batch()
    targets = encode(f, batch)
    predictions = f.decode(perfect_outputs(targets))
    num_isolated = 0
    for b, prediction in enumerate(predictions):
        assert prediction.poses.shape == (1, K, 3) and prediction.scores.shape == (1,)
        truth = batch["keypoints"][b, 0]
        labelled = truth[:, 2] > 0
        isolated = isolated_joints(truth, f.joint_radius)
        # Any joint with part of its disc left decodes within the disc radius: the centroid of
        # cells within r of the keypoint is within r of it. Isolated joints keep all their disc.
        present = np.isin(seg.JOINT_CLASS_OFFSET + np.arange(K), targets[seg.LABELS][b])
        assert np.all(present[isolated])
        error = np.linalg.norm(prediction.poses[0, :, :2] - truth[:, :2], axis=-1)
        found = labelled & present
        assert np.all(error[found] <= STRIDE * f.joint_radius + 1e-4), error[found]
        assert np.all(prediction.poses[0, found, 2] > 0.99)
        assert np.all(prediction.poses[0, ~present, 2] < 0.01)
        num_isolated += isolated.sum()
    assert num_isolated >= 10


def test_encode_is_jittable():
    f = formulation(label_other_people=True, class_weighting="inverse_sqrt_frequency")
    batch = make_batch()
    targets = jax.jit(f.encode)(batch)
    shapes = jax.eval_shape(f.encode, batch)
    assert {k: (v.shape, v.dtype) for k, v in targets.items()} == {
        k: (v.shape, v.dtype) for k, v in shapes.items()
    }
    assert targets[seg.LABELS].shape == (B, *MAP_SIZE)


def test_other_people_underneath_person_zero():
    batch = make_batch(drop=0.0)
    alone_targets = encode(formulation(), batch)
    alone = np.asarray(alone_targets[seg.PART_LABELS])
    crowd = encode(formulation(label_other_people=True), batch)
    crowd_parts = np.asarray(crowd[seg.PART_LABELS])
    for b in range(B):
        # Person 0 keeps all its cells; person 1 adds cells only if valid.
        np.testing.assert_array_equal(crowd_parts[b][alone[b] > 0], alone[b][alone[b] > 0])
        added = (crowd_parts[b] > 0) & (alone[b] == 0)
        assert added.any() == bool(batch["valid"][b, 1])
    # No joint discs for person 1: one disc class per joint, as before.
    np.testing.assert_array_equal(
        np.asarray(crowd[seg.LABELS]) >= seg.JOINT_CLASS_OFFSET,
        np.asarray(alone_targets[seg.LABELS]) >= seg.JOINT_CLASS_OFFSET,
    )


def test_rendered_without_part_mask_raises():
    with pytest.raises(ValueError, match="part_mask"):
        encode(formulation(target_source="rendered"), make_batch())


def test_rendered_parts_come_from_the_mask_and_discs_from_keypoints():
    f = formulation(target_source="rendered")
    batch = make_batch()
    rng = np.random.default_rng(0)
    part_mask = rng.integers(0, seg.NUM_PART_CLASSES, (B, *MAP_SIZE)).astype(np.int32)
    part_mask = np.repeat(np.repeat(part_mask, STRIDE, 1), STRIDE, 2)
    part_mask[:, ::STRIDE, ::STRIDE] = 0  # a minority label in every block: the mode wins
    batch["part_mask"] = part_mask
    targets = encode(f, batch)
    np.testing.assert_array_equal(targets[seg.PART_LABELS], part_mask[:, 1::STRIDE, 1::STRIDE])
    keypoint_discs = encode(formulation(), batch)[seg.LABELS] >= seg.JOINT_CLASS_OFFSET
    np.testing.assert_array_equal(targets[seg.LABELS] >= seg.JOINT_CLASS_OFFSET, keypoint_discs)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="target_source"):
        formulation(target_source="meshes")
    with pytest.raises(ValueError, match="28 weights"):
        formulation(class_weighting=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_weighting"):
        formulation(class_weighting="median_frequency")


def test_head_shapes_and_dtype():
    head = formulation().make_head(8, rngs=nnx.Rngs(0))
    for dtype in (jnp.float32, jnp.bfloat16):
        shapes = jax.eval_shape(head, jax.ShapeDtypeStruct((B, *MAP_SIZE, 8), dtype))
        assert shapes[seg.LOGITS].shape == (B, *MAP_SIZE, seg.NUM_CLASSES)
        assert shapes[seg.LOGITS].dtype == jnp.float32


@pytest.mark.parametrize("weighting", ["none", "inverse_sqrt_frequency", "explicit"])
def test_loss_finite_nonnegative_and_lowest_at_targets(weighting):
    if weighting == "explicit":
        weighting = [0.5] + [1.0] * 10 + [2.0] * 17
    f = formulation(class_weighting=weighting)
    targets = encode(f, make_batch())
    perfect, terms = loss(f, perfect_outputs(targets), targets)
    random_outputs = {seg.LOGITS: jax.random.normal(jax.random.key(0), (B, *MAP_SIZE, 28))}
    random, _ = loss(f, random_outputs, targets)
    assert np.isfinite(perfect) and np.isfinite(random)
    assert 0.0 <= perfect < 1e-6 < random
    assert set(terms) == {"cross_entropy", "ce_background", "ce_parts", "ce_joints"}


def test_inverse_sqrt_frequency_weights_average_to_one():
    targets = encode(formulation(class_weighting="inverse_sqrt_frequency"), make_batch())
    mask, weights = np.asarray(targets[seg.MASK]), np.asarray(targets[seg.WEIGHTS])
    np.testing.assert_allclose(weights.sum(), mask.sum(), rtol=1e-5)
    labels = np.asarray(targets[seg.LABELS])
    # Rare joint-disc cells weigh more than the common background.
    assert weights[labels >= seg.JOINT_CLASS_OFFSET].mean() > weights[labels == 0].mean()


def test_loss_mask_and_invalid_person_are_ignored():
    f = formulation()
    batch = make_batch()
    batch["loss_mask"][0, :16, :16] = 0.0  # map cells [0:4, 0:4] of example 0
    batch["valid"][1, 0] = False
    targets = encode(f, batch)
    assert not np.asarray(targets[seg.LABELS][1] >= seg.JOINT_CLASS_OFFSET).any()
    logits = jax.random.normal(jax.random.key(1), (B, *MAP_SIZE, 28))
    changed = logits.at[0, :4, :4].set(5.0).at[1].set(-3.0)
    np.testing.assert_allclose(
        loss(f, {seg.LOGITS: logits}, targets)[0], loss(f, {seg.LOGITS: changed}, targets)[0]
    )


def test_dense_maps_and_display():
    f = formulation()
    targets = encode(f, make_batch())
    outputs = perfect_outputs(targets)
    predicted, truth = f.dense_predictions(outputs), f.dense_targets(targets)
    assert predicted.shape == truth.shape == (B, *MAP_SIZE)
    assert predicted.max() < seg.NUM_PART_CLASSES and truth.max() < seg.NUM_PART_CLASSES
    labels = np.asarray(targets[seg.LABELS])
    parts = labels < seg.JOINT_CLASS_OFFSET
    np.testing.assert_array_equal(predicted[parts], truth[parts])
    maps = f.display_maps(outputs)
    np.testing.assert_array_equal(maps["classes"], labels)
    assert maps["joint_probability"].shape == (B, *MAP_SIZE)


def test_one_gradient_step_decreases_the_loss():
    f = formulation()
    head = f.make_head(8, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(head, optax.sgd(0.1), wrt=nnx.Param)
    features = jax.random.normal(jax.random.key(2), (B, *MAP_SIZE, 8))
    targets = encode(f, make_batch())

    def loss_fn(model):
        return f.loss(model(features), targets)[0]

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    before = step(head, optimizer)
    assert loss_fn(head) < before
