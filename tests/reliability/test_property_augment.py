"""Property-based augmentation tests: keypoints, pixels and part labels stay together under any
affine (scale, rotation, shift) with or without a flip; hypothesis versions of the fixed-seed
checks in ``tests/data/test_transforms.py``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from posejax import geometry, skeleton
from posejax.data import schema
from posejax.data import transforms as T

PROPERTY = settings(max_examples=40, deadline=None)

scales = st.floats(0.5, 2.0)
rotations = st.floats(-180.0, 180.0)
shifts = st.tuples(st.floats(-0.1, 0.1), st.floats(-0.1, 0.1))
flips = st.booleans()


def one_point_example(size: int, row: int, col: int, joint: int, part: int) -> dict:
    """A black image with one white pixel at ``(row, col)``, keypoint ``joint`` on it, and a
    3 x 3 block of part label ``part`` around it."""
    image = np.zeros((size, size, 3), np.uint8)
    image[row, col] = 255
    part_mask = np.zeros((size, size, 1), np.uint8)
    part_mask[row - 1 : row + 2, col - 1 : col + 2] = part
    keypoints = np.zeros((1, 17, 3), np.float32)
    keypoints[0, joint] = (col, row, 2)
    return {
        schema.IMAGE: image,
        schema.IMAGE_ID: np.int64(0),
        schema.KEYPOINTS: keypoints,
        schema.BOXES: np.array([[col - 4.0, row - 4.0, 8.0, 8.0]], np.float32),
        schema.AREA: np.array([64.0], np.float32),
        schema.IGNORE: np.zeros((1,), bool),
        schema.PART_MASK: part_mask,
    }


@PROPERTY
@given(
    row=st.integers(6, 33),
    col=st.integers(6, 33),
    joint=st.integers(0, 16),
    part=st.integers(1, skeleton.NUM_BODY_PARTS - 1),
    scale=scales,
    rotation=rotations,
    shift=shifts,
    flip=flips,
)
def test_keypoint_pixel_and_part_label_move_together(
    row, col, joint, part, scale, rotation, shift, flip
):
    example = one_point_example(40, row, col, joint, part)
    box = example[schema.BOXES][0]
    # Zoom ~5 (x scale): the bilinear blob of the white pixel is big enough to locate.
    matrix = T.top_down_affine(box, (40, 40), margin=1.0, scale=scale, rotation_deg=rotation,
                               shift=shift)  # fmt: skip
    out = T.warp_example(example, matrix, (40, 40), flip=flip)
    kp = out[schema.KEYPOINTS][0]

    # The label moves to the mirrored joint under a flip, nowhere else.
    slot = skeleton.COCO_FLIP_PERMUTATION[joint] if flip else joint
    assert np.flatnonzero(kp[:, 2]).tolist() == [slot]
    x, y, v = kp[slot]
    assert v == 2
    # The warped keypoint is where the transform sends the original point.
    np.testing.assert_allclose([x, y], geometry.apply_affine([col, row], out["transform"]),
                               atol=1e-4)  # fmt: skip
    # ... which is the centroid of the warped white pixel.
    blob = out[schema.IMAGE][..., 0].astype(np.float64)
    rows, cols = np.nonzero(blob)
    weights = blob[rows, cols]
    centroid = np.array([cols @ weights, rows @ weights]) / weights.sum()
    np.testing.assert_allclose(centroid, [x, y], atol=0.05)
    # ... and carries the part label (left/right swapped under a flip).
    expected_part = skeleton.BODY_PART_FLIP_PERMUTATION[part] if flip else part
    assert out[schema.PART_MASK][round(float(y)), round(float(x)), 0] == expected_part


@PROPERTY
@given(
    data=st.data(),
    image_hw=st.tuples(st.integers(20, 120), st.integers(20, 120)),
    input_hw=st.sampled_from([(64, 48), (64, 64), (32, 24)]),
    mode=st.sampled_from(["top_down", "bottom_up"]),
    scale=scales,
    rotation=rotations,
    shift=shifts,
    flip=flips,
)
def test_warped_keypoints_invert_to_the_originals(
    data, image_hw, input_hw, mode, scale, rotation, shift, flip
):
    h, w = image_hw
    xy = np.stack(
        [
            data.draw(st.lists(st.floats(-0.5, w - 0.5), min_size=17, max_size=17)),
            data.draw(st.lists(st.floats(-0.5, h - 0.5), min_size=17, max_size=17)),
        ],
        axis=1,
    )
    v = np.asarray(data.draw(st.lists(st.sampled_from([0, 1, 2]), min_size=17, max_size=17)))
    keypoints = np.concatenate([xy * (v[:, None] > 0), v[:, None]], axis=1).astype(np.float32)
    lo, hi = xy.min(0), xy.max(0)
    example = {
        schema.IMAGE: np.zeros((h, w, 3), np.uint8),
        schema.IMAGE_ID: np.int64(1),
        schema.KEYPOINTS: keypoints[None],
        schema.BOXES: np.array([[*lo, *(hi - lo)]], np.float32),
        schema.AREA: np.ones((1,), np.float32),
        schema.IGNORE: np.zeros((1,), bool),
    }
    kwargs = dict(scale=scale, rotation_deg=rotation, shift=shift)
    if mode == "top_down":
        matrix = T.top_down_affine(example[schema.BOXES][0], input_hw, **kwargs)
    else:
        matrix = T.bottom_up_affine((h, w), input_hw, **kwargs)
    out = T.warp_example(example, matrix, input_hw, flip=flip)
    source = skeleton.COCO_FLIP_PERMUTATION if flip else np.arange(17)
    warped = out[schema.KEYPOINTS][0]
    forward = geometry.apply_affine(keypoints[source, :2], out["transform"])
    ih, iw = input_hw
    inside = (forward >= -0.5).all(1) & (forward[:, 0] <= iw - 0.5) & (forward[:, 1] <= ih - 0.5)
    kept = (keypoints[source, 2] > 0) & inside
    # Exactly the labelled joints that land in the input are kept, with their flags ...
    np.testing.assert_array_equal(warped[:, 2] > 0, kept)
    np.testing.assert_array_equal(warped[kept, 2], keypoints[source][kept, 2])
    assert (warped[~kept] == 0).all()
    # ... and map back onto the originals through the inverse of the recorded transform.
    back = geometry.apply_affine(warped[kept, :2], geometry.invert_affine(out["transform"]))
    np.testing.assert_allclose(back, keypoints[source][kept, :2], atol=2e-3)
    # The transform is a similarity; a flip makes it a reflection.
    det = np.linalg.det(out["transform"][:, :2])
    assert (det < 0) == flip
    np.testing.assert_allclose(abs(det), T.affine_scale(matrix) ** 2, rtol=1e-9)


@PROPERTY
@given(
    image_hw=st.tuples(st.integers(8, 200), st.integers(8, 200)),
    input_w=st.integers(8, 200),
    scale=scales,
    rotation=rotations,
    shift=shifts,
)
def test_flipping_twice_is_the_identity(image_hw, input_w, scale, rotation, shift):
    matrix = T.bottom_up_affine(image_hw, (input_w, input_w), scale=scale, rotation_deg=rotation,
                                shift=shift)  # fmt: skip
    flipped = T.flip_affine(matrix, input_w)
    np.testing.assert_allclose(T.flip_affine(flipped, input_w), matrix, atol=1e-9)
    assert T.affine_scale(flipped) == T.affine_scale(matrix)
    # Pixel centres c and w - 1 - c swap.
    points = np.array([[0.0, 0.0], [image_hw[1] - 1.0, image_hw[0] - 1.0]])
    a, b = geometry.apply_affine(points, matrix), geometry.apply_affine(points, flipped)
    np.testing.assert_allclose(b[:, 0], input_w - 1 - a[:, 0], atol=1e-9)
    np.testing.assert_allclose(b[:, 1], a[:, 1], atol=1e-9)
