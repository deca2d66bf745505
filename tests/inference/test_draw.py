"""Readable pictures (posejax.inference.draw): integer enlargement, poses kept on their pixels."""

from __future__ import annotations

import numpy as np

from posejax.inference.draw import MIN_SIDE, draw_prediction, enlarge, scale_poses


def test_enlarge_is_an_integer_nearest_neighbour_upscale_to_the_minimum_side():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big, factor = enlarge(image)
    assert factor == MIN_SIDE // 2 and big.shape == (MIN_SIDE, 3 * factor, 3)
    assert (big[:factor, :factor] == image[0, 0]).all()
    assert enlarge(np.zeros((300, 400, 3), np.uint8))[1] == 1


def test_scaled_poses_land_on_the_centre_of_their_enlarged_pixel():
    poses = np.zeros((1, 17, 3))
    poses[0, 0] = (2.0, 1.0, 0.9)  # pixel (2, 1) covers enlarged pixels 8..11, 4..7 at f = 4
    scaled = scale_poses(poses, 4)
    np.testing.assert_allclose(scaled[0, 0], (9.5, 5.5, 0.9))
    assert (scaled[0, 1] == 0).all()  # joints not found stay (0, 0, 0)


def test_draw_prediction_draws_truth_and_prediction_apart_with_the_map_beside():
    image = np.full((64, 48, 3), 128, np.uint8)
    gt = np.zeros((1, 17, 3))
    gt[0, :, :2] = np.stack([np.full(17, 10.0), np.linspace(5, 60, 17)], axis=1)
    gt[0, :, 2] = 2
    pred = gt.copy()
    pred[0, :, 0] = 38.0
    picture = draw_prediction(image, gt, pred, caption="x", value_map=np.zeros((16, 12, 3)))
    factor = 256 // 48 + 1  # 6: the short side (48) enlarged to >= 256
    assert picture.shape == (22 + 64 * factor, 2 * 48 * factor, 3)
    left = picture[22:, : 48 * factor]
    green = (left[..., 1] > 200) & (left[..., 0] < 50)
    columns = np.flatnonzero(green.any(axis=0))
    assert columns.min() >= 9 * factor and columns.max() <= 12 * factor  # the truth at x = 10
