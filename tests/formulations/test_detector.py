"""The centre-point person detector (posejax.formulations.detector): targets, loss, decoder.

The contract test (test_contract.py) already checks shapes, the oracle round trip of every box
and that the oracle's loss is lowest; these check what is particular to this formulation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posejax.formulations.detector import CentreNetDetector, local_maxima

INPUT = (64, 64)
STRIDE = 4


def batch(boxes, valid):
    boxes = np.asarray(boxes, np.float32)[None]
    return {
        "boxes": jnp.asarray(boxes),
        "valid": jnp.asarray(np.asarray(valid, bool)[None]),
        "loss_mask": jnp.ones((1, *INPUT), jnp.float32),
    }


def detector(**kw):
    return CentreNetDetector(stride=STRIDE, input_size=INPUT, **kw)


def test_targets_peak_at_each_valid_box_centre_with_its_size_and_offset():
    f = detector()
    # Box centre (x, y) = (21.5, 33.5) input px -> map (4.999.., 7.999..) via image_to_map.
    t = jax.device_get(f.encode(batch([[10, 20, 23, 27], [40, 4, 8, 8]], [True, False])))
    centre = (21.5 - 1.5) / STRIDE, (33.5 - 1.5) / STRIDE
    cell = round(centre[0]), round(centre[1])
    assert t["centres"][0, cell[1], cell[0], 0] == pytest.approx(1.0)
    assert t["centre_cells"][0].sum() == 1  # the invalid person has no target
    np.testing.assert_allclose(t["sizes"][0, cell[1], cell[0]], [23 / STRIDE, 27 / STRIDE])
    np.testing.assert_allclose(
        t["offsets"][0, cell[1], cell[0]], [centre[0] - cell[0], centre[1] - cell[1]], atol=1e-6
    )
    # Size-adaptive Gaussian: wider for the bigger of two boxes.
    small = jax.device_get(f.encode(batch([[20, 20, 8, 8]], [True])))["centres"][0, ..., 0]
    large = jax.device_get(f.encode(batch([[4, 4, 56, 56]], [True])))["centres"][0, ..., 0]
    assert (large > 0.5).sum() > (small > 0.5).sum()


def test_focal_loss_rewards_a_peak_at_the_centre_and_punishes_one_elsewhere():
    f = detector()
    targets = f.encode(batch([[20, 20, 16, 24]], [True]))
    good = f.oracle_outputs(targets)
    cy, cx = np.argwhere(np.asarray(targets["centre_cells"][0]))[0]
    wrong = dict(good, centres=jnp.roll(good["centres"], 5, axis=2))  # peak 5 cells away
    flat = dict(good, centres=jnp.full_like(good["centres"], -2.0))  # nothing anywhere
    losses = [float(f.loss(o, targets)[1]["centre_focal"]) for o in (good, wrong, flat)]
    assert losses[0] < 0.1 < losses[2] < losses[1], losses
    sizes = dict(good, sizes=good["sizes"] + 1.0)  # L1 on the size, at the centre cell only
    terms = f.loss(sizes, targets)[1]
    assert float(terms["size_l1"]) == pytest.approx(2.0, rel=1e-5)


def test_decoder_keeps_local_maxima_above_min_score_best_first_up_to_max_detections():
    f = detector(max_detections=2, min_score=0.2)
    h, w = f.map_size
    logits = np.full((1, h, w, 1), -9.0, np.float32)
    for (y, x), p in {(2, 2): 0.9, (2, 3): 0.8, (10, 10): 0.5, (12, 4): 0.3, (5, 12): 0.1}.items():
        logits[0, y, x, 0] = np.log(p / (1 - p))
    outputs = {
        "centres": logits,
        "sizes": np.full((1, h, w, 2), 2.0, np.float32),
        "offsets": np.zeros((1, h, w, 2), np.float32),
    }
    (pred,) = f.decode(outputs)
    # (2, 3) is next to the higher (2, 2): suppressed; the top two of the rest are kept.
    np.testing.assert_allclose(pred.scores, [0.9, 0.5], rtol=1e-5)
    np.testing.assert_allclose(pred.boxes[0], [2 * 4 + 1.5 - 4, 2 * 4 + 1.5 - 4, 8, 8])
    assert not (pred.poses[..., 2] > 0).any()
    assert local_maxima(np.array([[1.0, 1.0], [0.0, 0.5]])).tolist() == [
        [True, True],
        [False, False],
    ]
