"""posejax.geometry: the back-projection the evaluator and the runners share."""

from __future__ import annotations

import numpy as np

from posejax.geometry import apply_affine, poses_to_original


def test_poses_to_original_inverts_the_input_transform_and_zeroes_missing_joints():
    # Original -> input: scale by 2, rotate by 90 degrees, shift.
    transform = np.array([[0.0, -2.0, 40.0], [2.0, 0.0, -6.0]])
    original = np.array([[[10.0, 5.0, 0.9], [3.0, 7.0, 0.0], [8.0, 1.0, 0.4]]])  # (1, 3, 3)
    decoded = original.copy()
    decoded[..., :2] = apply_affine(original[..., :2], transform)
    decoded[0, 1, :2] = (123.0, -4.0)  # a joint not found: its coordinates mean nothing
    back = poses_to_original(decoded.astype(np.float32), transform)
    assert back.dtype == np.float64 and back.shape == (1, 3, 3)
    np.testing.assert_allclose(back[0, [0, 2]], original[0, [0, 2]], atol=1e-5)
    np.testing.assert_array_equal(back[0, 1], 0.0)
    assert poses_to_original(np.zeros((0, 3, 3)), transform).shape == (0, 3, 3)
    assert decoded[0, 1, 0] == 123.0  # the input is not modified


def test_boxes_to_original_inverts_a_scale_and_translation():
    from posejax.geometry import apply_affine, boxes_to_original

    transform = np.array([[0.5, 0.0, 10.0], [0.0, 0.5, -4.0]])  # original -> input
    boxes = np.array([[20.0, 30.0, 40.0, 80.0], [0.0, 0.0, 2.0, 2.0]])  # original pixels
    corners = apply_affine(boxes[:, :2], transform)
    far = apply_affine(boxes[:, :2] + boxes[:, 2:], transform)
    in_input = np.concatenate([corners, far - corners], axis=1)
    np.testing.assert_allclose(boxes_to_original(in_input, transform), boxes, atol=1e-9)
