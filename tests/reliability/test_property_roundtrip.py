"""Property-based encode -> decode round trips of every formulation (the targets fed back as the
head's outputs must decode to the keypoints they were made from).

* heatmap: within a quarter input pixel at stride 4 for keypoints away from the border;
* regression: exact;
* segmentation: within one output pixel for isolated joints;
* PAF: every labelled joint of a person reachable through labelled limbs, within a quarter input
  pixel, as one person (crowds are covered by ``tests/formulations/test_paf_formulation.py``).

Shapes are fixed per test so each encoder is compiled once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.sparse.csgraph import connected_components

from posejax import geometry, skeleton
from posejax.formulations import regression
from posejax.formulations import segmentation as seg
from posejax.formulations.heatmap import GaussianHeatmap
from posejax.formulations.paf import PartAffinityFields

PROPERTY = settings(max_examples=25, deadline=None)
K = skeleton.NUM_KEYPOINTS
H, W = 64, 48  # top-down input (h, w)
STRIDE = 4


def flags(shape) -> st.SearchStrategy:
    return hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1.0, 2.0]))


def coordinates(batch: int, margin: float) -> st.SearchStrategy:
    """``(batch, K, 2)`` float32 points at least ``margin`` px inside the ``H x W`` input
    (whose pixels span ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``)."""
    x = hnp.arrays(
        np.float32, (batch, K), elements=st.floats(margin - 0.5, W - 0.5 - margin, width=32)
    )
    y = hnp.arrays(
        np.float32, (batch, K), elements=st.floats(margin - 0.5, H - 0.5 - margin, width=32)
    )
    return st.tuples(x, y).map(lambda xy: np.stack(xy, axis=-1))


def top_down_batch(xy: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """``(B, K, 2)`` and ``(B, K)`` -> a top-down batch (one person per example)."""
    keypoints = np.concatenate([xy * (v[..., None] > 0), v[..., None]], axis=-1)[:, None]
    b = len(xy)
    boxes = np.zeros((b, 1, 4), np.float32)
    for i in range(b):
        labelled = xy[i][v[i] > 0]
        if len(labelled):
            lo, hi = labelled.min(0), labelled.max(0)
            boxes[i, 0] = [*lo, *(hi - lo)]
    return {
        "image": np.zeros((b, H, W, 3), np.uint8),
        "keypoints": keypoints.astype(np.float32),
        "boxes": boxes,
        "valid": np.ones((b, 1), bool),
        "loss_mask": np.ones((b, H, W), np.float32),
    }


@functools.cache
def heatmap_encoder(sigma: float):
    form = GaussianHeatmap(stride=STRIDE, input_size=(H, W), sigma=sigma)
    return form, jax.jit(form.encode)


@PROPERTY
@given(
    xy=coordinates(2, margin=4.5),  # a cell from the border: the peak has both neighbours
    v=flags((2, K)),
    sigma=st.sampled_from([1.0, 1.5, 2.0]),
)
def test_heatmap_round_trip_within_a_quarter_pixel(xy, v, sigma):
    form, encode = heatmap_encoder(sigma)
    batch = top_down_batch(xy, v)
    predictions = form.decode({"heatmaps": np.asarray(encode(batch)["heatmaps"])})
    for b, prediction in enumerate(predictions):
        labelled = v[b] > 0
        error = np.linalg.norm(prediction.poses[0, :, :2] - xy[b], axis=-1)
        assert np.all(error[labelled] < 0.25), error[labelled]
        np.testing.assert_allclose(prediction.poses[0, labelled, 2], 1.0, atol=0.05)


@functools.cache
def regression_encoder():
    form = regression.CoordinateRegression(stride=STRIDE, input_size=(H, W), hidden_width=8)
    return form, jax.jit(form.encode)


@PROPERTY
@given(xy=coordinates(2, margin=0.0), v=flags((2, K)))
def test_regression_round_trip_is_exact(xy, v):
    form, encode = regression_encoder()
    targets = encode(top_down_batch(xy, v))
    outputs = {
        regression.COORDS: targets[regression.COORDS][None],
        regression.VISIBILITY_LOGITS: jnp.where(targets[regression.WEIGHTS] > 0, 30.0, -30.0),
    }
    for b, prediction in enumerate(form.decode(outputs)):
        labelled = v[b] > 0
        np.testing.assert_allclose(prediction.poses[0, labelled, :2], xy[b, labelled], atol=1e-4)
        np.testing.assert_allclose(prediction.poses[0, :, 2], labelled.astype(float), atol=1e-6)


@functools.cache
def segmentation_encoder():
    form = seg.PartSegmentation(stride=STRIDE, input_size=(H, W), head_channels=8)
    return form, jax.jit(form.encode)


@PROPERTY
@given(xy=coordinates(2, margin=0.0), v=flags((2, K)))
def test_segmentation_round_trip_within_one_output_pixel_for_isolated_joints(xy, v):
    form, encode = segmentation_encoder()
    targets = encode(top_down_batch(xy, v))
    outputs = {seg.LOGITS: 30.0 * jax.nn.one_hot(targets[seg.LABELS], seg.NUM_CLASSES)}
    for b, prediction in enumerate(form.decode(outputs)):
        labelled = v[b] > 0
        # Isolated: no other labelled joint within two disc radii (discs cannot overlap).
        on_map = geometry.image_to_map(xy[b], STRIDE)
        distance = np.linalg.norm(on_map[:, None] - on_map[None], axis=-1)
        near = labelled[:, None] & labelled[None] & ~np.eye(K, dtype=bool)
        isolated = labelled & ~np.any(near & (distance <= 2 * form.joint_radius), axis=1)
        error = np.linalg.norm(prediction.poses[0, :, :2] - xy[b], axis=-1)
        assert np.all(error[isolated] <= STRIDE * form.joint_radius + 1e-4), error[isolated]
        assert np.all(prediction.poses[0, isolated, 2] > 0.99)
        assert np.all(prediction.poses[0, ~labelled, 2] < 0.01)


# --------------------------------------------------------------------------- PAF

PAF_SIZE = 128
# A standing person facing the camera, unit height, origin at the top centre (y down).
_TEMPLATE = np.array(
    [(0.0, 0.08), (0.035, 0.055), (-0.035, 0.055), (0.075, 0.075), (-0.075, 0.075),
     (0.15, 0.2), (-0.15, 0.2), (0.2, 0.36), (-0.2, 0.36), (0.22, 0.5), (-0.22, 0.5),
     (0.1, 0.52), (-0.1, 0.52), (0.11, 0.74), (-0.11, 0.74), (0.11, 0.95), (-0.11, 0.95)]
)  # fmt: skip


@functools.cache
def paf_encoder():
    form = PartAffinityFields(stride=STRIDE, input_size=(PAF_SIZE, PAF_SIZE), stages=1)
    return form, jax.jit(form.encode)


def reachable(labelled: np.ndarray) -> np.ndarray:
    """The largest set of labelled joints connected through limbs with both ends labelled."""
    graph = np.zeros((K, K), bool)
    for a, b in skeleton.COCO_LIMBS:
        graph[a, b] = graph[b, a] = labelled[a] and labelled[b]
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component[labelled], minlength=K)
    return labelled & (component == sizes.argmax())


@PROPERTY
@given(
    height=st.floats(60.0, 110.0),
    angle=st.floats(-30.0, 30.0),
    centre=st.tuples(st.floats(50.0, 78.0), st.floats(50.0, 78.0)),
    jitter=hnp.arrays(np.float64, (K, 2), elements=st.floats(-0.02, 0.02)),
    dropped=hnp.arrays(bool, (K,), elements=st.sampled_from([False, False, False, True])),
)
def test_paf_round_trip_recovers_the_person(height, angle, centre, jitter, dropped):
    theta = np.deg2rad(angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    xy = ((_TEMPLATE + jitter) - [0.0, 0.5]) @ rotation.T * height + np.asarray(centre)
    # Away from the border (a map cell's margin, as for heatmaps), and reachable by limbs.
    inside = (xy >= 4.5).all(1) & (xy <= PAF_SIZE - 5.5).all(1)
    labelled = reachable(~dropped & inside)
    keypoints = np.zeros((1, 1, K, 3), np.float32)
    keypoints[0, 0] = np.concatenate([xy * labelled[:, None], 2.0 * labelled[:, None]], axis=1)
    form, encode = paf_encoder()
    targets = encode(
        {
            "keypoints": keypoints,
            "valid": np.ones((1, 1), bool),
            "loss_mask": np.ones((1, PAF_SIZE, PAF_SIZE), np.float32),
        }
    )
    outputs = {"heatmaps": targets["heatmaps"][None], "pafs": targets["pafs"][None]}
    (prediction,) = form.decode(outputs)
    if labelled.sum() < form.parsing.min_parts:
        assert len(prediction.scores) == 0
        return
    assert len(prediction.scores) == 1
    pose = prediction.poses[0]
    np.testing.assert_array_equal(pose[:, 2] > 0, labelled)
    error = np.linalg.norm(pose[labelled, :2] - xy[labelled], axis=-1)
    assert np.all(error < 0.25), error
