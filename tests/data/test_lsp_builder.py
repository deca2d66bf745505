"""lsp builder: the real LSPet fixture (14 x 3 x N, 1 = visible) and an LSP-layout file
(3 x 14 x N, 1 = occluded) written here from the same annotations."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from tf_guard import no_tensorflow_import

from posejax.data._builder_utils import BadExampleError
from posejax.data.lsp import (
    BOX_MARGIN,
    COCO_FROM_LSP,
    Lsp,
    resolve_split_rule,
    split_indices,
)

FIXTURE = pathlib.Path(os.environ["POSEJAX_FIXTURES"]) / "real/lsp_cpm"
NUM_FIXTURE_IMAGES = 50


def fixture_joints() -> np.ndarray:
    """(14, 3, 400) as stored in the LSPet fixture."""
    return scipy.io.loadmat(FIXTURE / "joints.mat")["joints"]


def make_manual_dir(root: pathlib.Path, joints: np.ndarray | None = None, digits: int = 5):
    manual = root / "manual"
    (manual / "images").mkdir(parents=True)
    for number in range(1, NUM_FIXTURE_IMAGES + 1):
        source = FIXTURE / "images" / f"im{number:05d}.jpg"
        (manual / "images" / f"im{number:0{digits}d}.jpg").symlink_to(source)
    if joints is None:
        (manual / "joints.mat").symlink_to(FIXTURE / "joints.mat")
    else:
        scipy.io.savemat(manual / "joints.mat", {"joints": joints})
    return manual


def build(root: pathlib.Path, manual: pathlib.Path, **kwargs):
    kwargs.setdefault("num_images", NUM_FIXTURE_IMAGES)
    builder = Lsp(data_dir=root / "data", **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    splits = {
        split: {int(e["image_id"]): e for e in builder.as_data_source(split)}
        for split in builder.info.splits.keys()
    }
    return builder, splits


def test_lspet_fixture(tmp_path):
    with no_tensorflow_import():
        builder, splits = build(tmp_path, make_manual_dir(tmp_path))
    # 50 entries, not 2000 / 10000: documented "halves" rule.
    assert sorted(splits["train"]) == list(range(1, 26))
    assert sorted(splits["test"]) == list(range(26, 51))
    meta = builder.info.metadata
    assert (meta["release"], meta["visibility"], meta["split_rule"]) == (
        "lspet",
        "one_is_visible",
        "halves",
    )
    raw = fixture_joints()[:, :, 0]  # image im00001: joint 0 (r_ankle) = (0, -26.1), flag 0
    example = splits["train"][1]
    assert example["keypoints"].shape == (1, 17, 3)
    native = example["native_keypoints"][0]
    assert native.shape == (14, 3)
    np.testing.assert_array_equal(native[0], 0)  # flag 0 in LSPet: not labelled
    np.testing.assert_allclose(native[1], [raw[1, 0] - 1, raw[1, 1] - 1, 2], rtol=1e-6)
    np.testing.assert_allclose(native[13], [raw[13, 0] - 1, raw[13, 1] - 1, 2], rtol=1e-6)
    coco = example["keypoints"][0]
    np.testing.assert_array_equal(coco[:5], 0)  # no face joints in LSP
    np.testing.assert_array_equal(coco[16], 0)  # right ankle: unlabelled
    np.testing.assert_allclose(coco[14], native[1])  # right knee
    np.testing.assert_allclose(coco[10], native[6])  # right wrist
    for coco_index, lsp_index in enumerate(COCO_FROM_LSP):
        if lsp_index >= 0:
            np.testing.assert_array_equal(coco[coco_index], native[lsp_index])
    # Box: labelled hull + margin, clipped to the 157 x 105 image.
    xy = raw[raw[:, 2] == 1, :2] - 1
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    pad = BOX_MARGIN * max(x1 - x0, y1 - y0)
    expected = [x0 - pad, y0 - pad, x1 + pad - (x0 - pad), min(y1 + pad, 104.5) - (y0 - pad)]
    np.testing.assert_allclose(example["boxes"][0], expected, rtol=1e-5)
    assert not example["ignore"][0]
    assert example["image"].shape == (105, 157, 3)
    # README: over the 50 images, 84 joints have flag 0 and exactly one flag-1 joint lies
    # outside the image (im00024).
    notes = meta["notes"]
    assert notes["train"]["unlabelled_joint"] + notes["test"]["unlabelled_joint"] == 84
    outside = sum(n.get("labelled_joint_outside_image", 0) for n in notes.values())
    assert outside == 1


def test_lsp_layout_and_visibility_flip(tmp_path):
    lspet = fixture_joints()[:, :, :NUM_FIXTURE_IMAGES]
    lsp = lspet.transpose(1, 0, 2).copy()  # 3 x 14 x N
    lsp[2] = 1 - lsp[2]  # LSP: 1 = occluded
    manual = make_manual_dir(tmp_path, lsp, digits=4)  # LSP names: im0001.jpg
    builder, splits = build(tmp_path, manual, split_rule="all_test")
    assert set(splits) == {"test"} and len(splits["test"]) == NUM_FIXTURE_IMAGES
    assert builder.info.metadata["release"] == "lsp"
    assert builder.info.metadata["visibility"] == "one_is_occluded"
    native = splits["test"][1]["native_keypoints"][0]
    # Joint 0 of im00001 is now "occluded": LSP annotates it, so it keeps its coordinates.
    np.testing.assert_allclose(native[0], [-1.0, lspet[0, 1, 0] - 1, 1.0], rtol=1e-6)
    visible = lspet[:, 2, 0] == 1
    np.testing.assert_allclose(native[visible, :2], lspet[visible, :2, 0] - 1, rtol=1e-6)
    np.testing.assert_array_equal(native[visible, 2], 2)


def test_split_rules():
    assert resolve_split_rule("auto", "lsp", 2000) == "standard"
    assert resolve_split_rule("auto", "lspet", 10000) == "all_train"
    assert resolve_split_rule("auto", "lspet", 50) == "halves"
    standard = split_indices(2000, "standard")
    assert (standard["train"][[0, -1]] == [0, 999]).all()
    assert (standard["test"][[0, -1]] == [1000, 1999]).all()
    halves = split_indices(5, "halves")
    assert halves["train"].tolist() == [0, 1, 2] and halves["test"].tolist() == [3, 4]
    with pytest.raises(ValueError, match="2000"):
        split_indices(50, "standard")


def test_bad_inputs_raise_naming_the_item(tmp_path):
    joints = fixture_joints()[:, :, :NUM_FIXTURE_IMAGES].copy()
    joints[3, 0, 6] = np.nan  # entry 6 = im00007, left hip, visible
    with pytest.raises(BadExampleError, match=r"entry 6 \(image number 7\).*left_hip"):
        build(tmp_path / "nan", make_manual_dir(tmp_path / "nan", joints))

    manual = make_manual_dir(tmp_path / "missing")
    with pytest.raises(BadExampleError, match="im00051.jpg"):
        build(tmp_path / "missing", manual, num_images=51)

    manual = make_manual_dir(tmp_path / "truncated")
    target = manual / "images" / "im00003.jpg"
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[: len(data) // 3])
    with pytest.raises(BadExampleError, match=r"im00003.jpg .*is truncated"):
        build(tmp_path / "truncated", manual)

    wrong = np.zeros((15, 3, 4))
    with pytest.raises(BadExampleError, match=r"shape \(15, 3, 4\)"):
        build(tmp_path / "shape", make_manual_dir(tmp_path / "shape", wrong))

    manual = make_manual_dir(tmp_path / "nofile")
    (manual / "joints.mat").unlink()
    with pytest.raises(FileNotFoundError, match="joints.mat"):
        build(tmp_path / "nofile", manual)


def test_skip_counts_bad_images(tmp_path):
    joints = fixture_joints()[:, :, :52].copy()
    joints[3, 0, 6] = np.inf
    builder, splits = build(
        tmp_path, make_manual_dir(tmp_path, joints), num_images=None, on_bad_example="skip"
    )
    assert sum(len(s) for s in splits.values()) == 49
    counts = builder.info.metadata["bad_examples"]
    assert sum(c.get("missing_image", 0) for c in counts.values()) == 2  # im00051, im00052
    assert sum(c.get("joints_not_finite", 0) for c in counts.values()) == 1
