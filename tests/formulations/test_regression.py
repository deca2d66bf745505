"""DeepPose coordinate regression: round trip, shapes, loss masking, cascade, one SGD step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from posejax.formulations import regression
from posejax.formulations.base import TOP_DOWN, PosePrediction

INPUT_SIZE = (64, 48)  # (h, w)
STRIDE = 4
B, M, K = 4, 2, 17

# A standing person facing the camera in a unit-height box: (x, y) per COCO-17 keypoint.
_TEMPLATE = np.array(
    [[0.50, 0.08], [0.53, 0.06], [0.47, 0.06], [0.57, 0.07], [0.43, 0.07],
     [0.65, 0.20], [0.35, 0.20], [0.72, 0.38], [0.28, 0.38], [0.75, 0.52],
     [0.25, 0.52], [0.60, 0.52], [0.40, 0.52], [0.62, 0.73], [0.38, 0.73],
     [0.63, 0.95], [0.37, 0.95]],
    dtype=np.float32,
)  # fmt: skip


def make_batch(seed: int = 0, *, drop: float = 0.15) -> dict[str, np.ndarray]:
    """Batch per posejax.data.schema with plausible random skeletons (B=4, M=2, 64x48)."""
    rng = np.random.default_rng(seed)
    h, w = INPUT_SIZE
    keypoints = np.zeros((B, M, K, 3), np.float32)
    boxes = np.zeros((B, M, 4), np.float32)
    for b in range(B):
        for m in range(M):
            height = rng.uniform(40, 56)
            centre = np.array([w / 2, h / 2]) + rng.uniform(-4, 4, 2) + (m * 12, 0)
            xy = (_TEMPLATE - 0.5) * height + centre + rng.normal(0, 1.5, (K, 2))
            xy = np.clip(xy, 0, [w - 1, h - 1])
            v = rng.choice([1.0, 2.0], K)
            v[rng.random(K) < drop] = 0
            keypoints[b, m] = np.concatenate([xy, v[:, None]], -1) * (v[:, None] > 0)
            lo, hi = xy[v > 0].min(0), xy[v > 0].max(0)
            boxes[b, m] = [*(lo - 2), *(hi - lo + 4)]
    return {
        "image": np.zeros((B, h, w, 3), np.uint8),
        "keypoints": keypoints,
        "boxes": boxes,
        "valid": np.array([[True, b % 2 == 0] for b in range(B)]),
        "loss_mask": np.ones((B, h, w), np.float32),
    }


def perfect_outputs(targets) -> dict[str, jax.Array]:
    """The targets fed back as head outputs (one stage; logit +-30 for labelled / not)."""
    return {
        regression.COORDS: targets[regression.COORDS][:, None],
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
        assert shapes[regression.COORDS].shape == (B, stages, K, 2)
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
    assert not np.allclose(outputs[regression.COORDS][:, 0], outputs[regression.COORDS][:, 2])


def test_loss_finite_nonnegative_and_lowest_at_targets():
    f = formulation()
    targets = f.encode(make_batch())
    perfect, perfect_terms = f.loss(perfect_outputs(targets), targets)
    key_coords, key_logits = jax.random.split(jax.random.key(1))
    random_outputs = {
        regression.COORDS: jax.random.uniform(key_coords, (B, 1, K, 2), minval=-0.5, maxval=0.5),
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
    moved[regression.COORDS] = outputs[regression.COORDS].at[0, :, 9].set(jnp.array([3.0, -7.0]))
    np.testing.assert_array_equal(f.loss(outputs, targets)[0], f.loss(moved, targets)[0])
    # ... while moving a labelled joint does.
    moved[regression.COORDS] = outputs[regression.COORDS].at[0, :, 5].add(0.1)
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
