"""MPII PCKh and LSP PCK@0.2 on native joints, against hand-computed cases."""

from __future__ import annotations

import json
import math
import os
import pathlib

import numpy as np
import pytest

from posejax.data.lsp import COCO_FROM_LSP, LSP_JOINTS
from posejax.data.mpii import COCO_FROM_MPII, MPII_JOINTS
from posejax.evaluation.dataset_metrics import (
    LSP,
    MPII,
    dataset_metrics,
    head_box_sizes,
    lsp_pck,
    mpii_head_sizes,
    mpii_pckh,
    native_from_coco,
    per_joint_table,
)

MPII_FIXTURE = pathlib.Path(os.environ["POSEJAX_FIXTURES"]) / "real/mmpose/mpii/test_mpii.json"

M = {name: i for i, name in enumerate(MPII_JOINTS)}
L = {name: i for i, name in enumerate(LSP_JOINTS)}


def coco_pose() -> np.ndarray:
    """(1, 17, 3): keypoint k at (k, 10 k), score 1."""
    k = np.arange(17, dtype=np.float64)
    return np.stack([k, 10 * k, np.ones(17)], axis=-1)[None]


def test_native_from_coco_copies_and_derives_mpii_joints():
    native = native_from_coco(coco_pose(), MPII)[0]
    assert native.shape == (16, 2)
    np.testing.assert_array_equal(native[M["right_ankle"]], [16, 160])
    np.testing.assert_array_equal(native[M["left_wrist"]], [9, 90])
    np.testing.assert_array_equal(native[M["right_shoulder"]], [6, 60])
    np.testing.assert_array_equal(native[M["pelvis"]], [11.5, 115])  # hips 11, 12
    np.testing.assert_array_equal(native[M["thorax"]], [5.5, 55])  # shoulders 5, 6
    assert np.isnan(native[[M["upper_neck"], M["head_top"]]]).all()
    expected = np.ones(16, bool)
    expected[[M["upper_neck"], M["head_top"]]] = False
    np.testing.assert_array_equal(MPII.available, expected)


def test_native_from_coco_lsp_has_no_neck_or_head_top():
    native = native_from_coco(coco_pose(), LSP)[0]
    np.testing.assert_array_equal(native[L["left_hip"]], [11, 110])
    np.testing.assert_array_equal(native[L["right_knee"]], [14, 140])
    assert np.isnan(native[[L["neck"], L["head_top"]]]).all()
    assert int(LSP.available.sum()) == 12
    # The inverse of the builders' tables: every copied joint comes back where it was stored.
    for table, skel in ((COCO_FROM_MPII, MPII), (COCO_FROM_LSP, LSP)):
        for coco_k, native_j in enumerate(table):
            if native_j >= 0:
                assert native_from_coco(coco_pose(), skel)[0, native_j, 0] == coco_k


def test_head_sizes_from_boxes_and_from_the_proxy():
    np.testing.assert_allclose(head_box_sizes([[5, 5, 30, 40]]), [0.6 * 50])
    gt = np.zeros((3, 16, 3))
    gt[:, M["upper_neck"]] = [10, 50, 2]
    gt[:, M["head_top"]] = [10, 10, 2]  # segment length 40
    gt[2, M["head_top"], 2] = 0  # person 2: head top not labelled
    sizes, from_proxy = mpii_head_sizes(gt)
    np.testing.assert_allclose(sizes[:2], [0.75 * 40, 0.75 * 40])
    assert math.isnan(sizes[2])
    np.testing.assert_array_equal(from_proxy, [True, True, False])
    # A head box wins; an all-zero box (unknown) falls back to the proxy.
    boxes = np.array([[0, 0, 30, 40], [0, 0, 0, 0], [0, 0, 6, 8]], np.float64)
    sizes, from_proxy = mpii_head_sizes(gt, boxes)
    np.testing.assert_allclose(sizes, [30.0, 30.0, 6.0])
    np.testing.assert_array_equal(from_proxy, [False, True, False])


def test_mpii_pckh_hand_count():
    # Two people, head sizes 10 and 20; every joint labelled at the origin except one.
    gt = np.zeros((2, 16, 3))
    gt[..., 2] = 2
    gt[1, M["left_knee"], 2] = 0  # unlabelled: never counts
    err = np.zeros((2, 16))
    err[0, M["right_ankle"]] = 4.0  # <= 5 (0.5 x 10), > 1 (0.1 x 10)
    err[0, M["right_knee"]] = 6.0  # wrong at 0.5
    err[1, M["right_knee"]] = 6.0  # <= 10 (0.5 x 20), > 2
    err[1, M["left_wrist"]] = 30.0  # wrong
    err[0, M["pelvis"]] = 100.0  # pelvis and thorax are not in MPII's mean
    pred = np.stack([err, np.zeros_like(err)], axis=-1)
    sizes = np.array([10.0, 20.0])

    mean, per_joint = mpii_pckh(pred, gt, sizes, alpha=0.5)
    # Mean joints: 14 per person, minus person 1's left knee = 27; wrong: 2.
    assert mean == pytest.approx(25 / 27)
    assert per_joint[M["right_knee"]] == pytest.approx(0.5)
    assert per_joint[M["left_wrist"]] == pytest.approx(0.5)
    assert per_joint[M["left_knee"]] == pytest.approx(1.0)
    assert per_joint[M["pelvis"]] == pytest.approx(0.5)

    mean, per_joint = mpii_pckh(pred, gt, sizes, alpha=0.1)
    assert mean == pytest.approx(23 / 27)  # + right ankle (0) and right knee (1) wrong
    assert per_joint[M["right_ankle"]] == pytest.approx(0.5)

    # Leaving joints out: per-joint NaN and out of the mean.
    available = np.ones(16, bool)
    available[[M["left_wrist"], M["right_knee"]]] = False
    mean, per_joint = mpii_pckh(pred, gt, sizes, alpha=0.5, available=available)
    assert mean == pytest.approx(23 / 23)
    assert np.isnan(per_joint[M["left_wrist"]])


def test_lsp_pck_is_torso_normalised():
    gt = np.zeros((2, 14, 3))
    gt[..., 2] = 2
    gt[:, L["left_shoulder"], :2] = [0, 0]
    gt[:, L["right_hip"], :2] = [30, 40]  # torso 50 -> threshold 10 at PCK@0.2
    gt[1, L["right_hip"], 2] = 0  # person 1 has no torso: left out entirely
    pred = gt[..., :2].copy()
    pred[0, L["right_wrist"]] += [6, 8]  # error 10: correct (<=)
    pred[0, L["left_ankle"]] += [0, 10.5]  # wrong
    pred[1] += 1000  # ignored
    mean, per_joint = lsp_pck(pred, gt)
    assert mean == pytest.approx(13 / 14)
    assert per_joint[L["left_ankle"]] == 0.0
    assert per_joint[L["right_wrist"]] == 1.0


def test_dataset_metrics_mpii_ground_truth_predictions():
    rng = np.random.default_rng(0)
    gt = np.zeros((3, 16, 3))
    gt[..., :2] = rng.uniform(0, 200, (3, 16, 2))
    gt[..., 2] = 2
    gt[:, M["pelvis"], :2] = gt[:, [M["left_hip"], M["right_hip"]], :2].mean(1)
    gt[:, M["thorax"], :2] = gt[:, [M["left_shoulder"], M["right_shoulder"]], :2].mean(1)
    coco = np.zeros((3, 17, 3))
    for k, j in enumerate(COCO_FROM_MPII):
        if j >= 0:
            coco[:, k] = gt[:, j]
    coco[2] = np.inf  # person 2 was not predicted: wrong everywhere

    out = dataset_metrics(gt, coco)
    assert out["MPII_PCKh@0.5"] == pytest.approx(2 / 3)
    assert out["MPII_PCKh@0.1"] == pytest.approx(2 / 3)
    assert out["MPII_PCKh@0.5/pelvis"] == pytest.approx(2 / 3)
    assert out["MPII_PCKh@0.5/Shoulder"] == pytest.approx(2 / 3)
    assert math.isnan(out["MPII_PCKh@0.5/head_top"])
    assert math.isnan(out["MPII_PCKh@0.5/Head"])
    assert out["MPII_PCKh/num_mean_joints"] == 12
    assert out["MPII_PCKh/head_size_proxy_fraction"] == 1.0
    boxes = np.tile([0.0, 0.0, 30.0, 40.0], (3, 1))
    assert dataset_metrics(gt, coco, head_boxes=boxes)["MPII_PCKh/head_size_proxy_fraction"] == 0
    table = per_joint_table(out, "MPII_PCKh@0.5")
    assert "| head_top | n/a |" in table and "| Mean | 66.7 |" in table


def test_dataset_metrics_lsp_and_unknown_skeletons():
    gt = np.zeros((1, 14, 3))
    gt[0, :, :2] = np.arange(28).reshape(14, 2) * 5.0
    gt[0, :, 2] = 2
    coco = np.zeros((1, 17, 3))
    for k, j in enumerate(COCO_FROM_LSP):
        if j >= 0:
            coco[0, k] = gt[0, j]
    out = dataset_metrics(gt, coco)
    assert out["LSP_PCK@0.2"] == 1.0
    assert out["LSP_PCK/num_mean_joints"] == 12
    assert math.isnan(out["LSP_PCK@0.2/neck"]) and math.isnan(out["LSP_PCK@0.2/Head"])
    assert out["LSP_PCK@0.2/Knee"] == 1.0
    assert dataset_metrics(np.zeros((2, 21, 3)), np.zeros((2, 17, 3))) == {}
    empty = dataset_metrics(np.zeros((0, 14, 3)), np.zeros((0, 17, 3)))
    assert math.isnan(empty["LSP_PCK@0.2"])


def test_mpii_fixture_pelvis_and_thorax_are_joint_midpoints():
    """The derivation rule on real annotations: within PCKh@0.1 of the annotated joints."""
    records = json.loads(MPII_FIXTURE.read_text())
    gt = np.array([np.c_[r["joints"], 2 * np.asarray(r["joints_vis"])] for r in records], float)
    gt[..., :2] -= 1.0  # MATLAB 1-based, as the builder stores them
    gt[gt[..., 2] == 0] = 0.0
    coco = np.zeros((len(gt), 17, 3))
    for k, j in enumerate(COCO_FROM_MPII):
        if j >= 0:
            coco[:, k] = gt[:, j]
    out = dataset_metrics(gt, coco)
    assert out["MPII_PCKh@0.1"] == 1.0
    assert out["MPII_PCKh@0.5/pelvis"] == 1.0 and out["MPII_PCKh@0.5/thorax"] == 1.0
    sizes, _ = mpii_head_sizes(gt)
    pred = native_from_coco(coco, MPII)
    for joint in ("pelvis", "thorax"):
        error = np.linalg.norm(pred[:, M[joint]] - gt[:, M[joint], :2], axis=-1)
        assert (error <= 0.05 * sizes).all(), (joint, error / sizes)
