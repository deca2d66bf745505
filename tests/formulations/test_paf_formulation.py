"""PartAffinityFields: head shapes, loss, jittable encoder, and encode -> decode on crowds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.sparse.csgraph import connected_components

from posejax import skeleton
from posejax.evaluation import coco_keypoint_ap, predictions_to_coco_results
from posejax.formulations.paf import PartAffinityFields

INPUT_SIZE = 256
STRIDE = 4

# A standing person facing the camera, unit height, (x, y) with y down, origin at the top centre.
_TEMPLATE = np.array(
    [
        (0.00, 0.08),  # nose
        (0.035, 0.055),  # left eye
        (-0.035, 0.055),  # right eye
        (0.075, 0.075),  # left ear
        (-0.075, 0.075),  # right ear
        (0.15, 0.20),  # left shoulder
        (-0.15, 0.20),  # right shoulder
        (0.20, 0.36),  # left elbow
        (-0.20, 0.36),  # right elbow
        (0.22, 0.50),  # left wrist
        (-0.22, 0.50),  # right wrist
        (0.10, 0.52),  # left hip
        (-0.10, 0.52),  # right hip
        (0.11, 0.74),  # left knee
        (-0.11, 0.74),  # right knee
        (0.11, 0.95),  # left ankle
        (-0.11, 0.95),  # right ankle
    ]
)
# How far each joint may wander (arms and legs move, the torso and face barely).
_JITTER = np.array([0.01] * 5 + [0.02] * 2 + [0.06] * 4 + [0.02] * 2 + [0.04] * 4)


def _largest_connected_part(labelled: np.ndarray) -> np.ndarray:
    """The largest set of labelled keypoints connected through limbs with both ends labelled.

    A bottom-up parser can only reach keypoints linked to the rest of their person by labelled
    limbs (a nose without eyes has no PAF to follow), so the others are unlabelled in the GT.
    """
    graph = np.zeros((17, 17), bool)
    for a, b in skeleton.COCO_LIMBS:
        graph[a, b] = graph[b, a] = labelled[a] and labelled[b]
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component[labelled], minlength=17)
    return labelled & (component == sizes.argmax())


def random_person(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A plausible random person in input pixels.

    Returns ``(17, 3)`` keypoints (``v = 2`` for labelled ones; about 10% dropped, and all
    outside the image) and the ``(4,)`` xywh box of the whole body clipped to the image.
    """
    height = rng.uniform(80.0, 200.0)
    pose = _TEMPLATE + rng.normal(size=(17, 2)) * _JITTER[:, None]
    angle = np.deg2rad(rng.uniform(-25.0, 25.0))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pose = (pose - [0.0, 0.5]) @ rotation.T * height
    centre = rng.uniform(0.15 * size, 0.85 * size, size=2)
    xy = pose + centre
    v = np.where(rng.uniform(size=17) < 0.1, 0, 2)
    v[(xy < 0).any(axis=1) | (xy > size - 1).any(axis=1)] = 0
    v[~_largest_connected_part(v > 0)] = 0
    keypoints = np.concatenate([np.where(v[:, None] > 0, xy, 0.0), v[:, None]], axis=1)
    top_left = np.clip(xy.min(axis=0), 0, size - 1)
    bottom_right = np.clip(xy.max(axis=0), 0, size - 1)
    return keypoints, np.concatenate([top_left, bottom_right - top_left])


def _segment_distance(p0, p1, q0, q1):
    """Distance between 2D segments ``p0 p1`` and ``q0 q1``, vectorised over leading axes."""

    def point_to_segment(x, a, b):
        ab = b - a
        t = np.clip(((x - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
        return np.linalg.norm(a + t[..., None] * ab - x, axis=-1)

    def cross(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    d1, d2 = cross(p1 - p0, q0 - p0), cross(p1 - p0, q1 - p0)
    d3, d4 = cross(q1 - q0, p0 - q0), cross(q1 - q0, p1 - q0)
    crossing = (d1 * d2 < 0) & (d3 * d4 < 0)
    distance = np.minimum.reduce(
        [
            point_to_segment(p0, q0, q1),
            point_to_segment(p1, q0, q1),
            point_to_segment(q0, p0, p1),
            point_to_segment(q1, p0, p1),
        ]
    )
    return np.where(crossing, 0.0, distance)


def _too_close(person, others, min_gap):
    """Whether a limb of ``person`` comes within ``min_gap`` of the same limb of one of
    ``others`` (``(17, 3)`` and ``(N, 17, 3)``); a limb with one labelled end counts as that
    point, so a lone keypoint lying on another person's limb of its type is caught too."""
    if len(others) == 0:
        return False

    def ends(people):
        a, b = np.asarray(skeleton.COCO_LIMBS).T
        start, end = people[..., a, :2], people[..., b, :2]
        has_a, has_b = people[..., a, 2:] > 0, people[..., b, 2:] > 0
        start, end = np.where(has_a, start, end), np.where(has_b, end, start)
        return start, end, (has_a | has_b)[..., 0]

    p0, p1, used = ends(person)
    q0, q1, others_used = ends(np.asarray(others))
    distance = _segment_distance(p0, p1, q0, q1)
    return bool((used & others_used & (distance < min_gap)).any())


def random_crowd_batch(
    rng: np.random.Generator,
    batch_size: int,
    max_people: int = 10,
    size: int = INPUT_SIZE,
    min_gap: float = 2.0 * STRIDE,
) -> dict[str, np.ndarray]:
    """A bottom-up batch (posejax.data.schema layout) of random overlapping people.

    People overlap freely, except that a limb never comes within ``min_gap`` input pixels of
    the same limb of another person: where two same-type limbs touch, their fields average
    and their endpoints' peaks merge on the map grid, which no parser can undo (these are the
    representation's limits, not the parser's).
    """
    keypoints = np.zeros((batch_size, max_people, 17, 3), np.float32)
    boxes = np.zeros((batch_size, max_people, 4), np.float32)
    valid = np.zeros((batch_size, max_people), bool)
    for b in range(batch_size):
        people, people_boxes = [], []
        wanted = rng.integers(1, max_people + 1)
        for _ in range(50 * wanted):
            if len(people) == wanted:
                break
            person, box = random_person(rng, size)
            if (person[:, 2] > 0).sum() >= 3 and not _too_close(person, people, min_gap):
                people.append(person)
                people_boxes.append(box)
        keypoints[b, : len(people)] = people
        boxes[b, : len(people)] = people_boxes
        valid[b, : len(people)] = True
    return {
        "image": np.zeros((batch_size, size, size, 3), np.uint8),
        "keypoints": keypoints,
        "boxes": boxes,
        "valid": valid,
        "loss_mask": np.ones((batch_size, size, size), np.float32),
    }


def coco_ground_truth(batch: dict[str, np.ndarray]) -> dict:
    """COCO keypoints GT of a batch (image ids 1..B); area = the whole-body box area.

    (The box of the labelled keypoints alone would make a face-only person a few pixels wide,
    where OKS punishes the rounding of the results.)
    """
    size = batch["image"].shape[1]
    images, annotations = [], []
    for b in range(batch["keypoints"].shape[0]):
        images.append({"id": b + 1, "width": size, "height": size})
        for m in np.nonzero(batch["valid"][b])[0]:
            kps = batch["keypoints"][b, m].astype(np.float64)
            box = batch["boxes"][b, m].astype(np.float64)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": b + 1,
                    "category_id": 1,
                    "keypoints": kps.reshape(-1).tolist(),
                    "num_keypoints": int((kps[:, 2] > 0).sum()),
                    "bbox": box.tolist(),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
    categories = [
        {
            "id": 1,
            "name": "person",
            "keypoints": list(skeleton.COCO_KEYPOINTS),
            "skeleton": [[a + 1, b + 1] for a, b in skeleton.COCO_LIMBS],
        }
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.mark.parametrize("matcher", ["greedy", "optimal", "ilp"])
def test_crowded_scenes_round_trip_ap(matcher):
    formulation = PartAffinityFields(
        stride=STRIDE, input_size=(INPUT_SIZE, INPUT_SIZE), parsing={"matcher": matcher}
    )
    batch = random_crowd_batch(np.random.default_rng(0), batch_size=24)
    targets = jax.jit(formulation.encode)(batch)
    outputs = {"heatmaps": targets["heatmaps"][None], "pafs": targets["pafs"][None]}
    predictions = formulation.decode(outputs)
    results = predictions_to_coco_results(
        range(1, len(predictions) + 1),
        [p.poses for p in predictions],
        [p.scores for p in predictions],
    )
    stats = coco_keypoint_ap(coco_ground_truth(batch), results)
    assert stats["AP"] >= 0.99, stats


def _single_limb_batch(people_xy, size=64):
    """Batch with one limb (left shoulder -> left elbow) per person, other keypoints absent."""
    keypoints = np.zeros((1, len(people_xy), 17, 3), np.float32)
    for m, (shoulder, elbow) in enumerate(people_xy):
        keypoints[0, m, 5] = (*shoulder, 2)
        keypoints[0, m, 7] = (*elbow, 2)
    return {
        "image": np.zeros((1, size, size, 3), np.uint8),
        "keypoints": keypoints,
        "valid": np.ones((1, len(people_xy)), bool),
        "loss_mask": np.ones((1, size, size), np.float32),
    }


def test_encode_is_jittable_and_matches_the_definition():
    # Stride 1 so that map pixels are input pixels; limb 8 of COCO_LIMBS is (5, 7).
    formulation = PartAffinityFields(stride=1, input_size=(32, 32), sigma=1.5, limb_width=1.0)
    batch = _single_limb_batch([((4.0, 10.0), (20.0, 10.0)), ((12.0, 4.0), (12.0, 20.0))], 32)
    targets = jax.jit(formulation.encode)(batch)
    heatmaps, pafs = np.asarray(targets["heatmaps"][0]), np.asarray(targets["pafs"][0, ..., 8, :])
    assert heatmaps.shape == (32, 32, 17) and targets["pafs"].shape == (1, 32, 32, 19, 2)
    np.testing.assert_allclose(heatmaps[10, 4, 5], 1.0)
    np.testing.assert_allclose(heatmaps[10, 6, 5], np.exp(-4.0 / (2 * 1.5**2)), rtol=1e-6)
    assert heatmaps[..., 0].max() == 0.0  # nose not labelled anywhere
    np.testing.assert_allclose(pafs[10, 8], [1.0, 0.0])  # on person 0's limb
    np.testing.assert_allclose(pafs[11, 16], [1.0, 0.0])  # within limb_width of it
    np.testing.assert_allclose(pafs[12, 16], [0.0, 0.0])  # outside
    np.testing.assert_allclose(pafs[6, 12], [0.0, 1.0])  # on person 1's limb only
    np.testing.assert_allclose(pafs[10, 12], [0.5, 0.5])  # both limbs: the average (Eq. 9)
    np.testing.assert_allclose(pafs[10, 21], [1.0, 0.0])  # end margin = limb_width
    np.testing.assert_allclose(pafs[10, 22], [0.0, 0.0])
    other_limbs = np.delete(np.asarray(targets["pafs"][0]), 8, axis=2)
    assert not other_limbs.any()
    paper = PartAffinityFields(stride=1, input_size=(32, 32), extend_limb_ends=False)
    np.testing.assert_allclose(jax.jit(paper.encode)(batch)["pafs"][0, 10, 21, 8], [0.0, 0.0])


def test_invalid_people_and_half_labelled_limbs_have_no_targets():
    formulation = PartAffinityFields(stride=1, input_size=(32, 32))
    batch = _single_limb_batch([((4.0, 10.0), (20.0, 10.0)), ((12.0, 4.0), (12.0, 20.0))], 32)
    batch["valid"][0, 1] = False
    batch["keypoints"][0, 0, 7] = 0.0  # person 0's elbow unlabelled: no limb, but a shoulder
    targets = jax.jit(formulation.encode)(batch)
    assert not np.asarray(targets["pafs"]).any()
    assert np.asarray(targets["heatmaps"][0, ..., 5]).max() == 1.0
    assert np.asarray(targets["heatmaps"][0, ..., 7]).max() == 0.0


@pytest.mark.parametrize("stages", [1, 3])
def test_head_shapes_per_stage(stages):
    formulation = PartAffinityFields(
        stride=4, input_size=(64, 48), stages=stages, stage_channels=8, stage_depth=1
    )
    head = formulation.make_head(16, rngs=nnx.Rngs(0))
    for dtype in (jnp.float32, jnp.bfloat16):
        out = jax.eval_shape(head, jax.ShapeDtypeStruct((2, 16, 12, 16), dtype))
        assert out["heatmaps"].shape == (stages, 2, 16, 12, 17)
        assert out["pafs"].shape == (stages, 2, 16, 12, 19, 2)
        assert out["heatmaps"].dtype == out["pafs"].dtype == jnp.float32


def test_loss_is_zero_at_the_targets_and_respects_the_mask():
    formulation = PartAffinityFields(stride=4, input_size=(64, 64), stages=2)
    batch = random_crowd_batch(np.random.default_rng(3), batch_size=2, max_people=3, size=64)
    encode, loss_fn = jax.jit(formulation.encode), jax.jit(formulation.loss)
    targets = encode(batch)
    perfect = {
        "heatmaps": jnp.stack([targets["heatmaps"]] * 2),
        "pafs": jnp.stack([targets["pafs"]] * 2),
    }
    loss, terms = loss_fn(perfect, targets)
    assert float(loss) == 0.0
    assert sorted(terms) == ["heatmap_stage1", "heatmap_stage2", "paf_stage1", "paf_stage2"]

    rng = np.random.default_rng(4)
    noisy = jax.tree.map(lambda x: x + rng.normal(size=x.shape).astype(np.float32), perfect)
    loss, terms = loss_fn(noisy, targets)
    assert np.isfinite(float(loss)) and all(float(v) > 0 for v in terms.values())
    np.testing.assert_allclose(float(loss), sum(float(v) for v in terms.values()), rtol=1e-6)

    # Errors under an ignored region (here the top half, min-pooled to map rows 0-7) are free.
    batch["loss_mask"][:, :32] = 0.0
    masked_targets = encode(batch)
    np.testing.assert_array_equal(masked_targets["mask"][:, :8], 0.0)
    np.testing.assert_array_equal(masked_targets["mask"][:, 8:], 1.0)
    worse = jax.tree.map(lambda x: x.at[:, :, :8].add(10.0), noisy)
    np.testing.assert_allclose(
        float(loss_fn(worse, masked_targets)[0]),
        float(loss_fn(noisy, masked_targets)[0]),
        rtol=1e-6,
    )


def test_decode_any_stage_and_display_maps():
    formulation = PartAffinityFields(stride=4, input_size=(128, 128), stages=2)
    batch = random_crowd_batch(np.random.default_rng(5), batch_size=2, max_people=3, size=128)
    targets = jax.jit(formulation.encode)(batch)
    outputs = {
        "heatmaps": jnp.stack([jnp.zeros_like(targets["heatmaps"]), targets["heatmaps"]]),
        "pafs": jnp.stack([jnp.zeros_like(targets["pafs"]), targets["pafs"]]),
    }
    first, last = formulation.decode(outputs, stage=0), formulation.decode(outputs)
    assert [len(p.scores) for p in first] == [0, 0]
    assert [len(p.scores) for p in last] == batch["valid"].sum(axis=1).tolist()
    for prediction in last:
        assert prediction.poses.dtype == np.float32 and prediction.poses.shape[1:] == (17, 3)
    maps = formulation.display_maps(outputs)
    assert {k: v.shape for k, v in maps.items()} == {
        "heatmap_max": (2, 32, 32),
        "paf_magnitude": (2, 32, 32),
    }


def test_rejects_unknown_matcher():
    with pytest.raises(ValueError, match="matcher"):
        PartAffinityFields(stride=4, input_size=(64, 64), parsing={"matcher": "hungarian"})


def test_paf_yaml_lists_exactly_the_parsing_defaults():
    """conf/formulation/paf.yaml repeats ParsingConfig's defaults (so Hydra can override each);
    this keeps the two from drifting apart."""
    import dataclasses
    from pathlib import Path

    import yaml

    from posejax.parsing.paf import ParsingConfig

    path = Path(__file__).parents[2] / "conf" / "formulation" / "paf.yaml"
    listed = yaml.safe_load(path.read_text())["parsing"]
    assert listed == dataclasses.asdict(ParsingConfig())
