import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from posejax.formulations.heatmap import GaussianHeatmap, decode_heatmaps


def _batch(rng, b=4, h=64, w=48):
    kps = np.zeros((b, 1, 17, 3), np.float32)
    kps[..., 0] = rng.uniform(4, w - 5, (b, 1, 17))
    kps[..., 1] = rng.uniform(4, h - 5, (b, 1, 17))
    kps[..., 2] = rng.choice([0, 1, 2], (b, 1, 17), p=[0.2, 0.3, 0.5])
    kps[kps[..., 2] == 0] = 0
    return {
        "image": np.zeros((b, h, w, 3), np.uint8),
        "keypoints": kps,
        "valid": np.ones((b, 1), bool),
        "loss_mask": np.ones((b, h, w), np.float32),
    }


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_encode_decode_round_trip_within_quarter_pixel_at_stride_4(sigma):
    form = GaussianHeatmap(stride=4, input_size=(64, 48), sigma=sigma)
    batch = _batch(np.random.default_rng(0))
    targets = jax.jit(form.encode)(batch)
    preds = form.decode({"heatmaps": np.asarray(targets["heatmaps"])})
    kps = batch["keypoints"][:, 0]
    labelled = kps[..., 2] > 0
    decoded = np.stack([p.poses[0] for p in preds])
    err = np.linalg.norm(decoded[..., :2] - kps[..., :2], axis=-1)[labelled]
    assert err.max() < 0.25
    np.testing.assert_allclose(decoded[..., 2][labelled], 1.0, atol=0.05)


def test_decode_matches_numpy_argmax_on_integer_peaks():
    maps = np.zeros((1, 8, 6, 2), np.float32)
    maps[0, 2, 3, 0] = 0.7  # isolated peak: no curvature info on a flat log -> integer position
    maps[0, 7, 0, 1] = 0.4  # corner peak
    out = decode_heatmaps(maps, stride=4)
    # cell (row 2, col 3) centre in input pixels: 3 * 4 + 1.5 = 13.5, 2 * 4 + 1.5 = 9.5
    np.testing.assert_allclose(out[0, 0], [13.5, 9.5, 0.7], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [1.5, 29.5, 0.4], atol=1e-6)


def test_unlabelled_joint_and_ignored_pixels_do_not_affect_the_loss():
    form = GaussianHeatmap(stride=4, input_size=(64, 48))
    batch = _batch(np.random.default_rng(1))
    batch["keypoints"][0, 0, 3] = 0  # joint 3 of example 0 unlabelled
    batch["loss_mask"][1, :32] = 0  # top half of example 1 ignored
    targets = form.encode(batch)
    rng = np.random.default_rng(2)
    out = {"heatmaps": jnp.asarray(rng.random((4, 16, 12, 17), np.float32))}
    loss, terms = form.loss(out, targets)
    changed = np.array(out["heatmaps"])
    changed[0, :, :, 3] += 5.0
    changed[1, :8] += 5.0
    loss2, _ = form.loss({"heatmaps": jnp.asarray(changed)}, targets)
    assert float(loss) == pytest.approx(float(loss2), rel=1e-6)
    assert float(form.loss(targets, targets)[0]) == 0.0
    assert set(terms) == {"heatmap_mse"}


def test_head_shapes_via_eval_shape():
    form = GaussianHeatmap(stride=4, input_size=(64, 48))
    head = form.make_head(32, rngs=nnx.Rngs(0))
    out = jax.eval_shape(head, jax.ShapeDtypeStruct((2, 16, 12, 32), jnp.float32))
    assert out["heatmaps"].shape == (2, 16, 12, 17)
    assert out["heatmaps"].dtype == jnp.float32
