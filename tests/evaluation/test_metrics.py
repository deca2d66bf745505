import json
import os
from pathlib import Path

import numpy as np
import pytest

from posejax.evaluation import coco_keypoint_ap, confusion_matrix, mean_iou, pck, torso_size

COCO_FIXTURE = Path(os.environ["POSEJAX_FIXTURES"]) / "real" / "mmpose" / "coco"


def _gt_as_results(gt: dict) -> list[dict]:
    results = []
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("num_keypoints", 0) == 0:
            continue
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": ann["keypoints"],
                "score": 1.0,
            }
        )
    return results


def test_coco_fixture_ground_truth_as_predictions_gives_ap_one():
    gt_path = COCO_FIXTURE / "test_coco.json"
    gt = json.loads(gt_path.read_text())
    stats = coco_keypoint_ap(gt_path, _gt_as_results(gt))
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR"] == pytest.approx(1.0)
    assert set(stats) == {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}


def test_coco_ap_drops_when_predictions_are_shifted():
    gt = json.loads((COCO_FIXTURE / "test_coco.json").read_text())
    results = _gt_as_results(gt)
    for r in results:
        kps = np.asarray(r["keypoints"], dtype=float).reshape(-1, 3)
        kps[:, 0] += 25.0
        r["keypoints"] = kps.reshape(-1).tolist()
    assert coco_keypoint_ap(gt, results)["AP"] < 0.9
    assert coco_keypoint_ap(gt, [])["AP"] == 0.0


def test_pck_against_hand_count():
    gt = np.zeros((2, 3, 3))
    gt[..., 2] = 2
    gt[1, 2, 2] = 0  # unlabelled: must not count
    pred = np.zeros((2, 3, 2))
    pred[0, 0] = [1.0, 0.0]  # error 1 <= 0.2 * 10
    pred[0, 1] = [3.0, 0.0]  # error 3 > 2
    pred[1, 2] = [50.0, 0.0]  # unlabelled
    mean, per_joint = pck(pred, gt, np.array([10.0, 10.0]), alpha=0.2)
    assert mean == pytest.approx(4 / 5)
    np.testing.assert_allclose(per_joint, [1.0, 0.5, 1.0])


def test_torso_size_is_nan_when_a_torso_joint_is_missing():
    gt = np.zeros((2, 17, 3))
    gt[:, 5] = [0.0, 0.0, 2]
    gt[:, 12] = [3.0, 4.0, 2]
    gt[1, 12, 2] = 0
    size = torso_size(gt)
    assert size[0] == pytest.approx(5.0) and np.isnan(size[1])


def test_mean_iou_matches_hand_computation():
    target = np.array([[0, 0, 1, 1], [2, 2, -1, -1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 0]])
    conf = confusion_matrix(pred, target, 3)
    miou, iou = mean_iou(conf)
    # class 0: inter 1, union 3; class 1: inter 2, union 3; class 2: inter 1, union 2
    np.testing.assert_allclose(iou, [1 / 3, 2 / 3, 1 / 2])
    assert miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_box_ap_is_one_for_the_ground_truth_boxes_and_falls_with_a_shift():
    from posejax.evaluation.coco_metrics import (
        BOX_STAT_NAMES,
        boxes_to_coco_results,
        coco_box_ap,
    )

    gt = json.loads((COCO_FIXTURE / "test_coco.json").read_text())
    people = [a for a in gt["annotations"] if not a.get("iscrowd", 0)]
    ids = sorted({a["image_id"] for a in people})
    boxes = [np.array([a["bbox"] for a in people if a["image_id"] == i]) for i in ids]
    scores = [np.ones(len(b)) for b in boxes]
    exact = coco_box_ap(gt, boxes_to_coco_results(ids, boxes, scores))
    assert set(exact) == set(BOX_STAT_NAMES)
    assert exact["AP"] == pytest.approx(1.0) and exact["AR100"] == pytest.approx(1.0)
    # Shift every box by a fifth of its width: still an IoU-0.5 match, no longer an 0.95 one.
    shifted = [
        b + np.stack([0.2 * b[:, 2], 0 * b[:, 0], 0 * b[:, 0], 0 * b[:, 0]], 1) for b in boxes
    ]
    moved = coco_box_ap(gt, boxes_to_coco_results(ids, shifted, scores))
    assert moved["AP50"] == pytest.approx(1.0) and moved["AP"] < 0.7
    assert coco_box_ap(gt, [])["AP"] == 0.0


def test_kept_samples_get_their_original_image_and_the_oks_of_each_scored_person():
    from posejax.evaluation.evaluator import _attach_originals

    people = np.zeros((3, 17, 3), np.float32)
    people[:, :, :2] = np.random.default_rng(0).uniform(10, 50, (3, 17, 2))
    people[:2, :, 2] = 2  # person 2: no labelled keypoint
    example = {
        "image": np.zeros((64, 64, 3), np.uint8),
        "image_id": np.int64(7),
        "keypoints": people,
        "area": np.full(3, 400.0, np.float32),
        "ignore": np.array([False, False, False]),
    }
    bottom_up = {"image_id": 7, "person_index": -1, "original_poses": people[:1].copy()}
    top_down = {"image_id": 7, "person_index": 1, "original_poses": people[1:2] + [3, 0, 0]}
    _attach_originals([bottom_up, top_down], [example])
    oks = bottom_up["original"]["oks"]
    assert oks[0] == pytest.approx(1.0) and oks[1] < 0.5 and np.isnan(oks[2])
    assert bottom_up["original"]["image"].shape == (64, 64, 3)
    assert bottom_up["original"]["gt"].shape == (3, 17, 3)
    oks = top_down["original"]["oks"]  # only the cropped person is scored
    assert np.isnan(oks[0]) and 0.0 < oks[1] < 1.0 and np.isnan(oks[2])
