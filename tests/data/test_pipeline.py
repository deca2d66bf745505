"""The grain input pipeline on a tiny in-memory source of schema-conforming examples."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from posejax import geometry, skeleton
from posejax.data import schema
from posejax.data import transforms as T
from posejax.data.pipeline import (
    BOTTOM_UP,
    TOP_DOWN,
    PipelineConfig,
    ReadAhead,
    _counter_uniforms,
    _EpochBatches,
    make_eval_batches,
    make_train_iterator,
    person_index,
)

K = 17


def make_person(rng, image_hw, *, labelled: int = K) -> tuple[np.ndarray, np.ndarray]:
    h, w = image_hw
    bw, bh = rng.uniform(10, w / 2), rng.uniform(15, h / 2)
    x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    keypoints = np.zeros((K, 3), np.float32)
    chosen = rng.choice(K, size=labelled, replace=False)
    keypoints[chosen, 0] = rng.uniform(x, x + bw, size=labelled)
    keypoints[chosen, 1] = rng.uniform(y, y + bh, size=labelled)
    keypoints[chosen, 2] = rng.choice([1, 2], size=labelled)
    return keypoints, np.array([x, y, bw, bh], np.float32)


def make_example(rng, image_id: int, people: list[dict]) -> dict:
    """``people``: dicts with optional ``labelled`` (keypoint count) and ``ignore``."""
    h, w = int(rng.integers(60, 100)), int(rng.integers(60, 100))
    keypoints, boxes = [], []
    for spec in people:
        kp, box = make_person(rng, (h, w), labelled=spec.get("labelled", K))
        keypoints.append(kp)
        boxes.append(box)
    keypoints = np.array(keypoints, np.float32).reshape(-1, K, 3)
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    part_mask = rng.integers(0, 11, size=(h, w, 1), dtype=np.uint8)
    return {
        schema.IMAGE: rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8),
        schema.IMAGE_ID: np.int64(10_000_000_000 + image_id),  # needs more than 32 bits
        schema.KEYPOINTS: keypoints,
        schema.BOXES: boxes,
        schema.AREA: (boxes[:, 2] * boxes[:, 3]).astype(np.float32),
        schema.IGNORE: np.array([bool(p.get("ignore", False)) for p in people], bool),
        schema.PART_MASK: part_mask,
    }


def make_source(n: int = 10, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    layouts = [
        [{}, {}],
        [{}],
        [],  # no people
        [{}, {"ignore": True}],
        [{"labelled": 0}, {}],  # a person without keypoints is no top-down crop
        [{}, {}, {}],
    ]
    return [make_example(rng, i, layouts[i % len(layouts)]) for i in range(n)]


SOURCE = make_source()
SMALL = dict(batch_size=4, input_size=(32, 24), max_people=3)


def top_down(**kwargs) -> PipelineConfig:
    return PipelineConfig(**{**SMALL, "mode": TOP_DOWN, **kwargs})


def bottom_up(**kwargs) -> PipelineConfig:
    return PipelineConfig(**{**SMALL, "mode": BOTTOM_UP, "input_size": (32, 32), **kwargs})


def take(iterator, n: int) -> list[dict]:
    return [next(iterator) for _ in range(n)]


def assert_batches_equal(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def assert_layout(batch: dict, cfg: PipelineConfig):
    b, (h, w), m = cfg.batch_size, cfg.input_size, cfg.slots
    expected = {
        "image": ((b, h, w, 3), np.uint8),
        "keypoints": ((b, m, K, 3), np.float32),
        "boxes": ((b, m, 4), np.float32),
        "valid": ((b, m), np.bool_),
        "loss_mask": ((b, h, w), np.float32),
        "part_mask": ((b, h, w), np.int32),
        "image_id": ((b,), np.int64),
        "person_index": ((b,), np.int32),
        "transform": ((b, 2, 3), np.float32),
        "scale": ((b,), np.float32),
        "weight": ((b,), np.float32),
    }
    assert set(batch) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape, key
        assert batch[key].dtype == dtype, key
    # Padding rows are zero; labelled keypoints lie inside the input.
    assert (batch["keypoints"][~batch["valid"]] == 0).all()
    kp = batch["keypoints"]
    labelled = kp[..., 2] > 0
    assert (kp[labelled][:, 0] >= -0.5).all() and (kp[labelled][:, 0] <= w - 0.5).all()
    assert (kp[~labelled] == 0).all()


def test_modes_match_the_formulation_interface():
    from posejax.formulations import base

    assert (TOP_DOWN, BOTTOM_UP) == (base.TOP_DOWN, base.BOTTOM_UP)
    with pytest.raises(ValueError):
        PipelineConfig(mode="sideways")


def test_person_index_skips_ignored_and_unlabelled_people():
    index = person_index(SOURCE)
    expected = []
    for i, example in enumerate(SOURCE):
        labelled = (example[schema.KEYPOINTS][..., 2] > 0).sum(-1)
        for p in range(len(labelled)):
            if not example[schema.IGNORE][p] and labelled[p] >= 1:
                expected.append([i, p])
    assert index.tolist() == expected
    assert person_index(SOURCE) is index  # cached
    assert len(person_index(SOURCE, min_keypoints=K + 1)) == 0


@pytest.mark.parametrize("cfg", [top_down(), bottom_up()], ids=["top_down", "bottom_up"])
def test_train_batches_follow_the_schema(cfg):
    it = make_train_iterator(SOURCE, cfg)
    for batch in take(it, 3):
        assert_layout(batch, cfg)
        assert (batch["weight"] == 1).all()
        if cfg.mode == TOP_DOWN:
            assert batch["valid"].all()
            assert (batch["person_index"] >= 0).all()
        else:
            assert (batch["person_index"] == -1).all()


def test_top_down_crop_round_trips_through_the_inverse_transform():
    cfg = top_down(batch_size=len(person_index(SOURCE)), input_size=(64, 48))
    batch = next(make_train_iterator(SOURCE, cfg))
    for b in range(cfg.batch_size):
        example = SOURCE[int(batch["image_id"][b]) - 10_000_000_000]
        person = int(batch["person_index"][b])
        original = example[schema.KEYPOINTS][person]
        matrix = batch["transform"][b].astype(np.float64)
        # Undo the flip's relabelling (if this crop was flipped) by matching labelled sets.
        labelled = batch["keypoints"][b, 0, :, 2] > 0
        back = geometry.apply_affine(
            batch["keypoints"][b, 0, :, :2], geometry.invert_affine(matrix)
        )
        mirrored = np.linalg.det(matrix[:, :2]) < 0
        perm = skeleton.COCO_FLIP_PERMUTATION if mirrored else np.arange(K)
        np.testing.assert_allclose(back[labelled], original[perm][labelled, :2], atol=1e-3)
        # Every labelled keypoint of the target that the crop keeps is inside the input.
        forward = geometry.apply_affine(original[:, :2], matrix)[perm]
        inside = (forward >= -0.5).all(-1) & (forward <= np.array([47.5, 63.5])).all(-1)
        np.testing.assert_array_equal(labelled, inside & (original[perm, 2] > 0))
        box = example[schema.BOXES][person]
        assert batch["scale"][b] == pytest.approx(np.sqrt(box[2] * box[3]))


def test_top_down_crop_without_augmentation_centres_the_person():
    cfg = top_down(augment=T.AugmentConfig(enabled=False), batch_size=2, input_size=(64, 48))
    batch = next(make_eval_batches(SOURCE, cfg))
    example = SOURCE[0]
    x, y, w, h = example[schema.BOXES][0]
    centre = geometry.apply_affine([x + w / 2, y + h / 2], batch["transform"][0].astype(float))
    np.testing.assert_allclose(centre, [23.5, 31.5], atol=1e-3)


def test_resumed_iterator_yields_the_same_batches():
    cfg = bottom_up(seed=3)
    it = make_train_iterator(SOURCE, cfg)
    take(it, 3)
    state = it.get_state()
    expected = take(it, 2)
    fresh = make_train_iterator(SOURCE, cfg)
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 2), expected)


def test_same_seed_same_batches_different_seed_different_batches():
    cfg = top_down(seed=5)
    a = take(make_train_iterator(SOURCE, cfg), 3)
    b = take(make_train_iterator(SOURCE, cfg), 3)
    assert_batches_equal(a, b)
    c = take(make_train_iterator(SOURCE, dataclasses.replace(cfg, seed=6)), 3)
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("mode", [TOP_DOWN, BOTTOM_UP])
def test_host_shards_split_the_single_host_global_batch(mode):
    # Two hosts with batch b: at every step their rows together are the batch of one host with
    # batch 2b (host 0 the first b rows, host 1 the next b), so results do not depend on hosts.
    cfg = PipelineConfig(mode=mode, input_size=(16, 16), batch_size=2, max_people=3)
    single = take(make_train_iterator(SOURCE, dataclasses.replace(cfg, batch_size=4)), 3)
    hosts = [
        take(make_train_iterator(SOURCE, cfg, shard_index=i, shard_count=2), 3) for i in range(2)
    ]
    for step, whole in enumerate(single):
        for i in range(2):
            part = hosts[i][step]
            for key, value in part.items():
                np.testing.assert_array_equal(value, whole[key][2 * i : 2 * i + 2], err_msg=key)


def test_eval_batches_are_ordered_padded_and_unaugmented():
    cfg = bottom_up(batch_size=4, seed=1)
    batches = list(make_eval_batches(SOURCE, cfg))
    assert len(batches) == 3  # 10 images -> 4 + 4 + 2 (+ 2 padding)
    for batch in batches:
        assert_layout(batch, cfg)
    ids = np.concatenate([b["image_id"] for b in batches])
    weights = np.concatenate([b["weight"] for b in batches])
    np.testing.assert_array_equal(weights, [1] * 10 + [0] * 2)
    np.testing.assert_array_equal(ids[:10], [e[schema.IMAGE_ID] for e in SOURCE])
    last = batches[-1]
    assert not last["valid"][2:].any() and (last["keypoints"][2:] == 0).all()
    for b, example in enumerate(SOURCE[:4]):  # no augmentation: the plain letterbox
        expected = T.bottom_up_affine(example[schema.IMAGE].shape[:2], cfg.input_size)
        np.testing.assert_allclose(batches[0]["transform"][b], expected, rtol=1e-6, atol=1e-6)
    # The same order every time, and limit takes a prefix.
    assert_batches_equal(list(make_eval_batches(SOURCE, cfg)), batches)
    limited = list(make_eval_batches(SOURCE, cfg, limit=5))
    assert len(limited) == 2 and limited[1]["weight"].tolist() == [1, 0, 0, 0]
    assert_batches_equal(limited[:1], batches[:1])


def test_top_down_eval_visits_every_usable_person_once():
    cfg = top_down(batch_size=4)
    batches = list(make_eval_batches(SOURCE, cfg))
    real = [
        (int(i) - 10_000_000_000, int(p))
        for b in batches
        for i, p, w in zip(b["image_id"], b["person_index"], b["weight"], strict=True)
        if w > 0
    ]
    assert real == [tuple(r) for r in person_index(SOURCE).tolist()]


def test_ignored_and_overflow_people_are_masked_not_dropped():
    rng = np.random.default_rng(7)
    example = make_example(rng, 0, [{}, {}, {}, {}, {"ignore": True}])
    example[schema.IMAGE] = np.zeros((60, 60, 3), np.uint8)
    example[schema.PART_MASK] = np.zeros((60, 60, 1), np.uint8)
    # Disjoint boxes of decreasing area so the masked regions are easy to check.
    boxes = np.array(
        [[2, 2, 20, 20], [30, 2, 25, 25], [2, 35, 10, 10], [30, 35, 15, 15], [20, 48, 8, 8]],
        np.float32,
    )
    example[schema.BOXES] = boxes
    example[schema.AREA] = boxes[:, 2] * boxes[:, 3]
    cfg = PipelineConfig(
        mode=BOTTOM_UP, input_size=(60, 60), max_people=2, batch_size=1,
        augment=T.AugmentConfig(enabled=False),
    )  # fmt: skip
    batch = next(make_eval_batches([example], cfg))
    assert batch["valid"][0].tolist() == [True, True]
    # Kept: the two largest (persons 0 and 1), in their original order.
    np.testing.assert_allclose(batch["boxes"][0], boxes[:2], atol=1e-4)
    mask = batch["loss_mask"][0]
    for p, (x, y, w, h) in enumerate(boxes.astype(int)):
        centre = mask[y + h // 2, x + w // 2]
        assert centre == (1.0 if p < 2 else 0.0), p
    assert mask[58, 58] == 1.0
    assert batch["scale"][0] == pytest.approx(1.0)


NO_TENSORFLOW_PROBE = """
import sys
import numpy as np
from posejax.data import pipeline

example = {
    "image": np.zeros((20, 20, 3), np.uint8),
    "image_id": np.int64(1),
    "keypoints": np.ones((1, 17, 3), np.float32),
    "boxes": np.array([[0, 0, 5, 5]], np.float32),
    "area": np.ones(1, np.float32),
    "ignore": np.zeros(1, bool),
}
for mode in ("top_down", "bottom_up"):
    cfg = pipeline.PipelineConfig(mode=mode, input_size=(8, 8), batch_size=2)
    next(pipeline.make_train_iterator([example] * 3, cfg))
    next(pipeline.make_eval_batches([example] * 3, cfg))
assert "tensorflow" not in sys.modules, "the pipeline imported tensorflow"
"""


def test_no_tensorflow_is_imported():
    # A fresh interpreter: other tests in this process may import whatever they like.
    result = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW_PROBE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_worker_processes_give_the_same_stream_and_resume():
    cfg = bottom_up(seed=2)
    expected = take(make_train_iterator(SOURCE, cfg), 5)
    it = make_train_iterator(SOURCE, dataclasses.replace(cfg, num_workers=2))
    try:
        got = take(it, 3)
        state = it.get_state()
        got += take(it, 2)
    finally:
        it.close()
    assert_batches_equal(got, expected)
    fresh = make_train_iterator(SOURCE, dataclasses.replace(cfg, num_workers=2))
    try:
        fresh.set_state(state)
        assert_batches_equal(take(fresh, 2), expected[3:])
    finally:
        fresh.close()


def test_threads_give_the_same_stream():
    cfg = top_down(seed=4)
    expected = take(make_train_iterator(SOURCE, cfg), 3)
    got = take(make_train_iterator(SOURCE, dataclasses.replace(cfg, read_threads=2)), 3)
    assert_batches_equal(got, expected)


def test_every_key_appears_once_per_epoch_in_a_new_order_each_epoch():
    keys = np.stack([np.arange(10), -np.ones(10, np.int64)], axis=1)
    batches = _EpochBatches(keys, batch_size=4, seed=7)  # 4 does not divide 10: batches straddle
    positions, rows = zip(*(batches[i] for i in range(10)), strict=True)
    np.testing.assert_array_equal(np.concatenate(positions), np.arange(40))
    images = np.concatenate(rows)[:, 0]
    epochs = images.reshape(4, 10)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(10))
    assert len({tuple(e) for e in epochs}) == 4
    # Random access gives the same rows as reading in order (what resuming and sharding need).
    again = _EpochBatches(keys, batch_size=4, seed=7)
    np.testing.assert_array_equal(again[7][1], rows[7])


def test_counter_uniforms_are_uniform_deterministic_and_random_access():
    u = _counter_uniforms(11, np.arange(20_000), 5)
    assert u.shape == (20_000, 5) and (u >= 0).all() and (u < 1).all()
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03  # draws of a position independent
    np.testing.assert_array_equal(_counter_uniforms(11, np.array([123, 7]), 5), u[[123, 7]])
    assert not np.array_equal(_counter_uniforms(12, np.arange(4), 5), u[:4])


def test_read_ahead_yields_the_stream_and_checkpoints_the_batch_it_returns_next():
    cfg = top_down(seed=8)
    expected = take(make_train_iterator(SOURCE, cfg), 6)
    ahead = ReadAhead(make_train_iterator(SOURCE, cfg), depth=2)
    try:
        got = take(ahead, 3)
        state = ahead.get_state()  # batches the thread made ahead are not counted
        got += take(ahead, 3)
    finally:
        ahead.close()
    assert_batches_equal(got, expected)
    fresh = make_train_iterator(SOURCE, cfg)
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 3), expected[3:])
    with pytest.raises(RuntimeError, match="after close"):
        next(ahead)


class _Failing:
    """Two batches, then an error; records whether it was closed."""

    def __init__(self):
        self.made, self.closed = 0, False

    def __next__(self):
        if self.made == 2:
            raise OSError("disk gone: shard-00003.array_record")
        self.made += 1
        return {"n": np.array(self.made)}

    def get_state(self):
        return {"made": self.made}

    def close(self):
        self.closed = True


def test_read_ahead_raises_the_producer_error_in_order_and_closes_the_source():
    source = _Failing()
    ahead = ReadAhead(source, depth=4)
    assert [int(next(ahead)["n"]) for _ in range(2)] == [1, 2]
    assert ahead.get_state() == {"made": 2}
    with pytest.raises(OSError, match="shard-00003"):
        next(ahead)
    ahead.close()
    assert source.closed


def test_read_ahead_close_does_not_hang_on_a_full_queue():
    ahead = ReadAhead(make_train_iterator(SOURCE, top_down()), depth=1)
    next(ahead)  # the thread now blocks on a full queue
    ahead.close()
    assert not ahead._thread.is_alive()
