"""Geometry of one example: affines, flips, and warping that keeps labels on the body."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from posejax import geometry, skeleton
from posejax.data import schema
from posejax.data import transforms as T

# A frontal person (their left side at larger x), keypoints >= 12 px apart, box ~ 100 x 140.
TEMPLATE = np.array(
    [
        [50, 16], [62, 6], [38, 6], [76, 14], [24, 14], [74, 36], [26, 36], [90, 60], [10, 60],
        [96, 86], [4, 86], [66, 84], [34, 84], [70, 110], [30, 110], [72, 136], [28, 136],
    ],
    dtype=np.float32,
)  # fmt: skip
DOT_RADIUS = 5

# Part class painted under each keypoint (shoulders/hips: torso, face: head, else its limb).
KEYPOINT_PART = np.array([1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 6, 2, 2, 7, 8, 9, 10])


def keypoint_colour(k: int) -> np.ndarray:
    return np.array([60 + 10 * k, 250 - 10 * k, 100 + 60 * (k % 3)], dtype=np.uint8)


def dotted_person_example(rng, offset=(30.0, 20.0), image_hw=(180, 160)) -> dict:
    """One person whose keypoints are painted as coloured discs, part labels underneath."""
    h, w = image_hw
    image = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    part_mask = np.zeros((h, w, 1), np.uint8)
    xy = TEMPLATE + np.asarray(offset, np.float32) + rng.uniform(-0.5, 0.5, size=(17, 2))
    for k, (x, y) in enumerate(xy):
        centre = (round(float(x)), round(float(y)))
        cv2.circle(image, centre, DOT_RADIUS, keypoint_colour(k).tolist(), -1)
        cv2.circle(part_mask, centre, DOT_RADIUS, int(KEYPOINT_PART[k]), -1)
    keypoints = np.concatenate([xy, np.full((17, 1), 2.0)], axis=1).astype(np.float32)[None]
    low, high = xy.min(0), xy.max(0)
    return {
        schema.IMAGE: image,
        schema.IMAGE_ID: np.int64(7),
        schema.KEYPOINTS: keypoints,
        schema.BOXES: np.array([[*low, *(high - low)]], np.float32),
        schema.AREA: np.array([float(np.prod(high - low))], np.float32),
        schema.IGNORE: np.array([False]),
        schema.PART_MASK: part_mask,
    }


def test_template_dots_do_not_overlap():
    dist = np.linalg.norm(TEMPLATE[:, None] - TEMPLATE[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert dist.min() > 2 * DOT_RADIUS + 1.5


def test_single_bright_pixel_lands_on_transformed_keypoint_exactly():
    # Quarter turns, integer shifts and mirrors map pixel centres onto pixel centres.
    size = 40
    image = np.zeros((size, size, 3), np.uint8)
    r, c = 11, 27
    image[r, c] = 255
    example = {
        schema.IMAGE: image,
        schema.IMAGE_ID: np.int64(0),
        schema.KEYPOINTS: np.array([[[c, r, 2]] * 17], np.float32),
        schema.BOXES: np.zeros((1, 4), np.float32),
        schema.AREA: np.ones((1,), np.float32),
        schema.IGNORE: np.zeros((1,), bool),
    }
    for rotation, flip, shift in itertools.product((0, 90, 180, 270), (False, True), (0, 3)):
        matrix = T.bottom_up_affine(
            (size, size), (size, size), rotation_deg=rotation, shift=(shift / size, 0)
        )
        out = T.warp_example(example, matrix, (size, size), flip=flip)
        x, y = out[schema.KEYPOINTS][0, 0, :2]
        assert x == round(x) and y == round(y)
        assert out[schema.IMAGE][int(y), int(x)].tolist() == [255, 255, 255]
        assert out[schema.IMAGE].sum() == 3 * 255


def test_subpixel_affine_matches_opencv_pixel_centres():
    # Zoom x5 with a random rotation: the warped blob of one bright pixel (bilinear) and of one
    # labelled pixel (nearest) must be centred on the warped point. A half-pixel convention error
    # would shift them by 2 px or more; the nearest blob's centroid is only good to ~0.4 px
    # because its ~25 pixels quantise a rotated 5 x 5 square.
    rng = np.random.default_rng(0)
    for _ in range(10):
        image = np.zeros((30, 30, 3), np.uint8)
        labels = np.zeros((30, 30, 1), np.uint8)
        r, c = rng.integers(10, 20, size=2)
        image[r, c] = 255
        labels[r, c] = 5
        example = {
            schema.IMAGE: image,
            schema.IMAGE_ID: np.int64(0),
            schema.KEYPOINTS: np.array([[[c, r, 2]] * 17], np.float32),
            schema.BOXES: np.array([[c - 2.0, r - 2.0, 4.0, 4.0]], np.float32),
            schema.AREA: np.ones((1,), np.float32),
            schema.IGNORE: np.zeros((1,), bool),
            schema.INSTANCE_MASK: labels,
        }
        box = [c - 4 + rng.uniform(-1, 1), r - 4 + rng.uniform(-1, 1), 8.0, 8.0]
        matrix = T.top_down_affine(box, (40, 40), margin=1.0, rotation_deg=rng.uniform(-180, 180))
        assert T.affine_scale(matrix) == pytest.approx(5.0)
        out = T.warp_example(example, matrix, (40, 40), flip=bool(rng.integers(2)))
        target = out[schema.KEYPOINTS][0, 0, :2]
        bilinear, nearest = out[schema.IMAGE][..., 0], out[schema.INSTANCE_MASK][..., 0]
        for blob, tolerance in ((bilinear, 0.02), (nearest, 0.6)):
            rows, cols = np.nonzero(blob)
            weights = blob[rows, cols].astype(float)
            centroid = np.array([cols @ weights, rows @ weights]) / weights.sum()
            np.testing.assert_allclose(centroid, target, atol=tolerance)


def test_top_down_affine_maps_padded_box_onto_the_input():
    h, w = 64, 48
    box = np.array([10.0, 20.0, 30.0, 40.0])  # aspect 0.75 == w / h
    matrix = T.top_down_affine(box, (h, w), margin=1.0)
    corners = geometry.apply_affine([[10, 20], [40, 60], [25, 40]], matrix)
    np.testing.assert_allclose(
        corners, [[-0.5, -0.5], [w - 0.5, h - 0.5], [(w - 1) / 2, (h - 1) / 2]]
    )
    # A wide box is padded vertically: its width fills the input, the centre stays centred.
    matrix = T.top_down_affine([0.0, 0.0, 80.0, 10.0], (h, w), margin=1.25)
    ends = geometry.apply_affine([[-10, 5], [90, 5]], matrix)
    np.testing.assert_allclose(ends, [[-0.5, (h - 1) / 2], [w - 0.5, (h - 1) / 2]])


def test_bottom_up_affine_letterboxes_the_whole_image():
    matrix = T.bottom_up_affine((100, 200), (128, 128))
    corners = geometry.apply_affine([[-0.5, -0.5], [199.5, 99.5]], matrix)
    np.testing.assert_allclose(corners, [[-0.5, 31.5], [127.5, 95.5]])
    assert T.affine_scale(matrix) == pytest.approx(128 / 200)
    # scale > 1 magnifies about the input centre.
    zoomed = T.bottom_up_affine((100, 200), (128, 128), scale=2.0)
    assert T.affine_scale(zoomed) == pytest.approx(256 / 200)
    np.testing.assert_allclose(geometry.apply_affine([99.5, 49.5], zoomed), [63.5, 63.5])


def test_flip_affine_mirrors_input_pixel_centres():
    matrix = T.bottom_up_affine((30, 40), (30, 40), rotation_deg=17.0, shift=(0.1, -0.2))
    flipped = T.flip_affine(matrix, 40)
    points = np.random.default_rng(1).uniform(0, 30, size=(5, 2))
    a, b = geometry.apply_affine(points, matrix), geometry.apply_affine(points, flipped)
    np.testing.assert_allclose(b[:, 0], 39 - a[:, 0])
    np.testing.assert_allclose(b[:, 1], a[:, 1])
    np.testing.assert_allclose(T.flip_affine(flipped, 40), matrix, atol=1e-12)


def test_flip_swaps_left_and_right():
    example = dotted_person_example(np.random.default_rng(2))
    size = example[schema.IMAGE].shape[:2]
    identity = T.bottom_up_affine(size, size)
    np.testing.assert_allclose(identity, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    out = T.warp_example(example, identity, size, flip=True)
    before, after = example[schema.KEYPOINTS][0], out[schema.KEYPOINTS][0]
    width = size[1]
    left_shoulder, right_shoulder = 5, 6
    # The person's left shoulder is on the viewer's right (larger x) before the flip ...
    assert before[left_shoulder, 0] > before[right_shoulder, 0]
    # ... and after the flip the left-shoulder label sits at the mirrored right shoulder.
    np.testing.assert_allclose(after[left_shoulder, 0], width - 1 - before[right_shoulder, 0])
    np.testing.assert_allclose(after[left_shoulder, 1], before[right_shoulder, 1])
    assert after[left_shoulder, 0] > after[right_shoulder, 0]
    np.testing.assert_array_equal(
        after[skeleton.COCO_FLIP_PERMUTATION, 0], width - 1 - before[:, 0]
    )
    np.testing.assert_array_equal(out[schema.IMAGE], example[schema.IMAGE][:, ::-1])


def test_part_mask_labels_swap_under_flip():
    h, w = 20, 30
    part_mask = np.zeros((h, w, 1), np.uint8)
    part_mask[:, :10] = 3  # left_upper_arm on the viewer's left
    part_mask[:, 10:20] = 1  # head: no side
    part_mask[:, 20:] = 8  # right_upper_leg on the viewer's right
    example = {
        schema.IMAGE: np.zeros((h, w, 3), np.uint8),
        schema.IMAGE_ID: np.int64(0),
        schema.KEYPOINTS: np.zeros((0, 17, 3), np.float32),
        schema.BOXES: np.zeros((0, 4), np.float32),
        schema.AREA: np.zeros((0,), np.float32),
        schema.IGNORE: np.zeros((0,), bool),
        schema.PART_MASK: part_mask,
        schema.INSTANCE_MASK: part_mask.copy(),  # ids are mirrored but never relabelled
    }
    out = T.warp_example(example, T.bottom_up_affine((h, w), (h, w)), (h, w), flip=True)
    labels = out[schema.PART_MASK][..., 0]
    assert out[schema.PART_MASK].shape == (h, w, 1)
    assert out[schema.PART_MASK].dtype == np.uint8
    assert (labels[:, :10] == 7).all()  # right_upper_leg -> left_upper_leg, now on the left
    assert (labels[:, 10:20] == 1).all()
    assert (labels[:, 20:] == 4).all()  # left_upper_arm -> right_upper_arm, now on the right
    np.testing.assert_array_equal(out[schema.INSTANCE_MASK], part_mask[:, ::-1])


@pytest.mark.parametrize("mode", ["top_down", "bottom_up"])
def test_keypoints_stay_on_the_body_under_random_affines_and_flips(mode):
    rng = np.random.default_rng(3)
    augment = T.AugmentConfig()
    input_size = (128, 96) if mode == "top_down" else (128, 128)
    checked = 0
    for trial in range(12):
        example = dotted_person_example(rng)
        aug = augment.sample(rng)
        if trial < 2:  # make sure both branches are covered
            aug = T.Augmentation(aug.scale, aug.rotation_deg, aug.shift, flip=bool(trial))
        kwargs = dict(scale=aug.scale, rotation_deg=aug.rotation_deg, shift=aug.shift)
        if mode == "top_down":
            matrix = T.top_down_affine(example[schema.BOXES][0], input_size, **kwargs)
        else:
            matrix = T.bottom_up_affine(example[schema.IMAGE].shape[:2], input_size, **kwargs)
        out = T.warp_example(example, matrix, input_size, flip=aug.flip)
        # Raw pixels are not relabelled, so slot k shows the colour of source keypoint perm[k];
        # part labels are swapped, so they match slot k's own class.
        source_k = skeleton.COCO_FLIP_PERMUTATION if aug.flip else np.arange(17)
        for k, (x, y, v) in enumerate(out[schema.KEYPOINTS][0]):
            if v == 0:
                continue
            col = min(round(float(x)), input_size[1] - 1)
            row = min(round(float(y)), input_size[0] - 1)
            pixel = out[schema.IMAGE][row, col].astype(int)
            np.testing.assert_allclose(pixel, keypoint_colour(source_k[k]), atol=2)
            assert out[schema.PART_MASK][row, col, 0] == KEYPOINT_PART[k]
            checked += 1
    assert checked > 12 * 17 * 0.7


def test_keypoints_leaving_the_input_are_zeroed_and_boxes_are_hulls():
    example = dotted_person_example(np.random.default_rng(4))
    matrix = T.bottom_up_affine((180, 160), (180, 160), shift=(0.5, 0.0))  # right half leaves
    out = T.warp_example(example, matrix, (180, 160))
    kp = out[schema.KEYPOINTS][0]
    moved = example[schema.KEYPOINTS][0, :, 0] + 80
    outside = moved > 159.5
    assert outside.any() and (~outside).any()
    assert (kp[outside] == 0).all()
    np.testing.assert_allclose(kp[~outside, 0], moved[~outside], rtol=1e-6)
    assert (kp[~outside, 2] == 2).all()

    # A quarter turn swaps box width and height; area scales with the determinant.
    matrix = T.bottom_up_affine((180, 160), (90, 80), rotation_deg=90)
    out = T.warp_example(example, matrix, (90, 80))
    _, _, bw, bh = example[schema.BOXES][0]
    np.testing.assert_allclose(out[schema.BOXES][0, 2:], [bh / 2, bw / 2], rtol=1e-5)
    np.testing.assert_allclose(out[schema.AREA], example[schema.AREA] / 4, rtol=1e-5)


def test_warp_carries_head_boxes_and_drops_native_keypoints():
    example = dotted_person_example(np.random.default_rng(5))
    example[schema.HEAD_BOXES] = np.array([[20.0, 20.0, 40.0, 30.0]], np.float32)
    example[schema.NATIVE_KEYPOINTS] = np.zeros((1, 16, 3), np.float32)
    matrix = T.bottom_up_affine((180, 160), (90, 80))
    out = T.warp_example(example, matrix, (90, 80), flip=True)
    # Halving about pixel centres: x -> (x + 0.5) / 2 - 0.5, then mirrored: x -> 79 - x.
    np.testing.assert_allclose(out[schema.HEAD_BOXES], [[79 - 29.75, 9.75, 20, 15]], atol=1e-4)
    assert schema.NATIVE_KEYPOINTS not in out
    np.testing.assert_allclose(out["transform"], T.flip_affine(matrix, 80))


def test_box_region_mask_follows_rotation():
    matrix = T.bottom_up_affine((40, 40), (40, 40), rotation_deg=45)
    mask = T.box_region_mask(np.array([[10.0, 10.0, 20.0, 20.0]]), matrix, (40, 40))
    assert mask[20, 20] and not mask[0, 0]
    assert mask.sum() == pytest.approx(400, rel=0.1)  # a rotated square, not its hull (800)
    assert not T.box_region_mask(np.zeros((0, 4)), matrix, (40, 40)).any()


def test_augment_config_sampling():
    rng = np.random.default_rng(6)
    cfg = T.AugmentConfig()
    draws = [cfg.sample(rng) for _ in range(200)]
    scales = np.array([d.scale for d in draws])
    assert scales.min() >= 0.75 and scales.max() <= 1.25
    assert max(abs(d.rotation_deg) for d in draws) <= 30
    assert max(max(abs(s) for s in d.shift) for d in draws) <= 0.1
    assert 60 < sum(d.flip for d in draws) < 140
    off = T.AugmentConfig(enabled=False)
    assert all(off.sample(rng) == T.Augmentation() for _ in range(5))
