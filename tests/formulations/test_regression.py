"""DeepPose coordinate regression: round trip, shapes, loss masking, cascade, one SGD step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from top_down_batches import INPUT_SIZE, B, K, make_batch

from posejax.formulations import regression
from posejax.formulations.base import TOP_DOWN, PosePrediction

STRIDE = 4


def perfect_outputs(targets) -> dict[str, jax.Array]:
    """The targets fed back as head outputs (one stage; logit +-30 for labelled / not)."""
    return {
        regression.COORDS: targets[regression.COORDS][None],
        regression.VISIBILITY_LOGITS: jnp.where(targets[regression.WEIGHTS] > 0, 30.0, -30.0),
    }


def formulation(**kwargs) -> regression.CoordinateRegression:
    defaults = dict(stride=STRIDE, input_size=INPUT_SIZE, hidden_width=32)
    return regression.CoordinateRegression(**(defaults | kwargs))


def test_is_top_down():
    assert formulation().input_mode == TOP_DOWN


def test_normalisation_maps_crop_edges_to_half():
    h, w = INPUT_SIZE
    corners = jnp.array([[-0.5, -0.5], [w - 0.5, h - 0.5]])
    np.testing.assert_allclose(
        regression.normalise_coordinates(corners, INPUT_SIZE), [[-0.5, -0.5], [0.5, 0.5]]
    )


def test_round_trip_is_exact():
    f = formulation()
    batch = make_batch()
    predictions = f.decode(perfect_outputs(f.encode(batch)))
    assert len(predictions) == B
    for b, prediction in enumerate(predictions):
        assert isinstance(prediction, PosePrediction)
        assert prediction.poses.shape == (1, K, 3) and prediction.scores.shape == (1,)
        truth = batch["keypoints"][b, 0]
        labelled = truth[:, 2] > 0
        decoded = prediction.poses[0]
        np.testing.assert_allclose(decoded[labelled, :2], truth[labelled, :2], atol=1e-4)
        np.testing.assert_allclose(decoded[labelled, 2], 1.0, atol=1e-6)
        np.testing.assert_allclose(decoded[~labelled, 2], 0.0, atol=1e-6)
        np.testing.assert_allclose(prediction.scores[0], labelled.mean(), atol=1e-6)


def test_encode_is_jittable_and_masks_invalid_person():
    f = formulation()
    batch = make_batch()
    batch["valid"][1, 0] = False
    eager = f.encode(batch)
    jitted = jax.jit(f.encode)(batch)
    for key in eager:
        np.testing.assert_allclose(jitted[key], eager[key], atol=1e-6)
    np.testing.assert_array_equal(eager[regression.WEIGHTS][1], 0.0)
    assert eager[regression.EXAMPLE_WEIGHTS][1] == 0.0


@pytest.mark.parametrize("stages", [1, 3])
def test_head_shapes(stages):
    f = formulation(stages=stages)
    head = f.make_head(8, rngs=nnx.Rngs(0))
    for dtype in (jnp.float32, jnp.bfloat16):
        features = jax.ShapeDtypeStruct((B, 16, 12, 8), dtype)
        shapes = jax.eval_shape(head, features)
        assert shapes[regression.COORDS].shape == (stages, B, K, 2)
        assert shapes[regression.VISIBILITY_LOGITS].shape == (B, K)
        assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(shapes))


def test_cascade_has_one_term_per_stage():
    f = formulation(stages=3)
    head = f.make_head(8, rngs=nnx.Rngs(0))
    features = jax.random.normal(jax.random.key(0), (B, 16, 12, 8))
    outputs = head(features)
    loss, terms = f.loss(outputs, f.encode(make_batch()))
    assert set(terms) == {"coord_stage1", "coord_stage2", "coord_stage3", "visibility"}
    coord = sum(terms[f"coord_stage{s}"] for s in (1, 2, 3))
    expected = coord + f.visibility_weight * terms["visibility"]
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # Stages really refine: the later estimates differ from the first.
    assert not np.allclose(outputs[regression.COORDS][0], outputs[regression.COORDS][2])


def test_loss_finite_nonnegative_and_lowest_at_targets():
    f = formulation()
    targets = f.encode(make_batch())
    perfect, perfect_terms = f.loss(perfect_outputs(targets), targets)
    key_coords, key_logits = jax.random.split(jax.random.key(1))
    random_outputs = {
        regression.COORDS: jax.random.uniform(key_coords, (1, B, K, 2), minval=-0.5, maxval=0.5),
        regression.VISIBILITY_LOGITS: jax.random.normal(key_logits, (B, K)),
    }
    random, _ = f.loss(random_outputs, targets)
    assert np.isfinite(perfect) and np.isfinite(random)
    assert 0.0 <= perfect < random
    assert perfect_terms["coord_stage1"] == 0.0


def test_unlabelled_joint_does_not_change_the_loss():
    f = formulation()
    batch = make_batch()
    batch["keypoints"][0, 0, 9] = 0.0  # left wrist of example 0 unlabelled
    targets = f.encode(batch)
    outputs = perfect_outputs(targets)
    moved = dict(outputs)
    moved[regression.COORDS] = outputs[regression.COORDS].at[:, 0, 9].set(jnp.array([3.0, -7.0]))
    np.testing.assert_array_equal(f.loss(outputs, targets)[0], f.loss(moved, targets)[0])
    # ... while moving a labelled joint does.
    moved[regression.COORDS] = outputs[regression.COORDS].at[:, 0, 5].add(0.1)
    assert f.loss(moved, targets)[0] > f.loss(outputs, targets)[0]


def test_bilinear_sample_matches_numpy():
    features = jax.random.normal(jax.random.key(2), (2, 5, 6, 3))
    points = jnp.array([[[1.25, 2.5], [0.0, 0.0]], [[4.9, 3.1], [7.0, -1.0]]])
    sampled = regression.bilinear_sample(features, points)
    f = np.asarray(features)

    def lerp(b, x, y):
        x, y = np.clip(x, 0, 5), np.clip(y, 0, 4)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        x1, y1 = min(x0 + 1, 5), min(y0 + 1, 4)
        ax, ay = x - x0, y - y0
        top = f[b, y0, x0] * (1 - ax) + f[b, y0, x1] * ax
        return top * (1 - ay) + (f[b, y1, x0] * (1 - ax) + f[b, y1, x1] * ax) * ay

    expected = [[lerp(b, *np.asarray(points[b, n])) for n in range(2)] for b in range(2)]
    np.testing.assert_allclose(sampled, expected, rtol=1e-5, atol=1e-6)


def test_one_gradient_step_decreases_the_loss():
    f = formulation(stages=2)
    head = f.make_head(8, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(head, optax.sgd(0.05), wrt=nnx.Param)
    features = jax.random.normal(jax.random.key(3), (B, 16, 12, 8))
    targets = f.encode(make_batch())

    def loss_fn(model):
        return f.loss(model(features), targets)[0]

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    before = step(head, optimizer)
    after = loss_fn(head)
    assert after < before
