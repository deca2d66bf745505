"""mpii_human_pose builder: JSON config from the real mmpose fixture, mat config from a small
``RELEASE`` struct written here with scipy.io.savemat in the layout of the official file."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from tf_guard import no_tensorflow_import

from posejax.data._builder_utils import BadExampleError
from posejax.data.mpii import BOX_MARGIN, COCO_FROM_MPII, MpiiHumanPose

FIXTURE = pathlib.Path(os.environ["POSEJAX_FIXTURES"]) / "real/mmpose/mpii"


def fixture_records() -> list[dict]:
    return json.loads((FIXTURE / "test_mpii.json").read_text())


def record(name: str) -> dict:
    return next(r for r in fixture_records() if r["image"] == name)


def make_manual_dir(root: pathlib.Path, annotation: str | None = "json", records=None):
    manual = root / "manual"
    (manual / "images").mkdir(parents=True)
    for jpg in FIXTURE.glob("*.jpg"):
        (manual / "images" / jpg.name).symlink_to(jpg)
    if annotation == "json":
        (manual / "annotations").mkdir()
        text = json.dumps(records if records is not None else fixture_records())
        (manual / "annotations" / "mpii_val.json").write_text(text)
    return manual


def build(root: pathlib.Path, manual: pathlib.Path, config: str = "json", **kwargs):
    builder = MpiiHumanPose(config=config, data_dir=root / "data", **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    split = "validation" if config == "json" else "train"
    examples = {int(e["image_id"]): e for e in builder.as_data_source(split)}
    return builder, examples


def expected_box(native_xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Hand computation of the documented rule: hull + BOX_MARGIN * larger side, clipped."""
    (x0, y0), (x1, y1) = native_xy.min(0), native_xy.max(0)
    pad = BOX_MARGIN * max(x1 - x0, y1 - y0)
    x0, y0 = max(x0 - pad, -0.5), max(y0 - pad, -0.5)
    x1, y1 = min(x1 + pad, width - 0.5), min(y1 + pad, height - 0.5)
    return np.array([x0, y0, x1 - x0, y1 - y0])


def test_json_fixture(tmp_path):
    with no_tensorflow_import():
        builder, examples = build(tmp_path, make_manual_dir(tmp_path))
    assert set(builder.info.splits.keys()) == {"validation"}
    assert sorted(examples) == [4645041, 5808361, 51423444, 52475643, 60754485]
    assert all(len(e["keypoints"]) == 1 for e in examples.values())
    assert "head_boxes" not in examples[5808361]  # the JSON has none; nothing is invented

    raw = record("051423444.jpg")  # r_ankle (0) and l_ankle (5) are missing: (-1, -1), vis 0
    example = examples[51423444]
    native = example["native_keypoints"][0]
    assert native.shape == (16, 3)
    np.testing.assert_array_equal(native[0], [0, 0, 0])
    np.testing.assert_array_equal(native[5], [0, 0, 0])
    # MATLAB 1-based -> pixel centres at 0: (1033, 649) is stored as (1032, 648).
    np.testing.assert_allclose(native[1], [1032.0, 648.0, 2.0])
    np.testing.assert_allclose(native[9], [raw["joints"][9][0] - 1, raw["joints"][9][1] - 1, 2])
    coco = example["keypoints"][0]
    np.testing.assert_array_equal(coco[:5], 0)  # nose, eyes, ears: no MPII equivalent
    np.testing.assert_array_equal(coco[16], 0)  # right ankle missing in this record
    np.testing.assert_allclose(coco[14], native[1])  # right knee
    np.testing.assert_allclose(coco[5], native[13])  # left shoulder
    np.testing.assert_allclose(coco[10], native[10])  # right wrist
    for coco_index, mpii_index in enumerate(COCO_FROM_MPII):
        if mpii_index >= 0:
            np.testing.assert_array_equal(coco[coco_index], native[mpii_index])
    labelled = np.array(raw["joints"])[np.array(raw["joints_vis"]) > 0] - 1.0
    np.testing.assert_allclose(example["boxes"][0], expected_box(labelled, 1280, 720), rtol=1e-5)
    np.testing.assert_allclose(example["area"][0], np.prod(example["boxes"][0][2:]), rtol=1e-5)
    assert not example["ignore"][0]
    assert example["image"].shape == (720, 1280, 3)


def test_json_groups_people_of_one_image(tmp_path):
    records = fixture_records()
    second = dict(record("052475643.jpg"))
    second["joints"] = [[x + 5.0, y] for x, y in second["joints"]]
    records.append(second)
    _, examples = build(tmp_path, make_manual_dir(tmp_path, records=records))
    assert len(examples) == 5
    people = examples[52475643]["native_keypoints"]
    assert people.shape == (2, 16, 3)
    np.testing.assert_allclose(people[1, :, 0] - people[0, :, 0], 5.0)


# --- official .mat -----------------------------------------------------------------------------


def _struct_array(records: list[dict]) -> np.ndarray:
    """MATLAB 1xN struct array; fields a record lacks are empty ([]), as in the real file."""
    fields = list(dict.fromkeys(k for r in records for k in r))
    array = np.zeros((1, len(records)), dtype=[(f, object) for f in fields])
    for i, r in enumerate(records):
        for f in fields:
            array[0, i][f] = r.get(f, np.zeros((0, 0)))
    return array


def _points(joints, vis, is_visible=None) -> np.ndarray:
    is_visible = is_visible or {}
    points = [
        {"x": float(x), "y": float(y), "id": float(j), "is_visible": is_visible.get(j, 1.0)}
        for j, ((x, y), v) in enumerate(zip(joints, vis, strict=True))
        if v
    ]
    return _struct_array(points)


def write_release_mat(path: pathlib.Path) -> None:
    a, b = record("005808361.jpg"), record("052475643.jpg")
    # is_visible as found in the real file: numbers, strings, or empty.
    mixed = {0: 0.0, 1: "1", 2: "0", 3: np.zeros((0, 0))}
    rect_a = {
        "x1": 950.0, "y1": 70.0, "x2": 1000.0, "y2": 240.0,
        "annopoints": {"point": _points(a["joints"], a["joints_vis"], mixed)},
        "scale": a["scale"],
        "objpos": {"x": a["center"][0], "y": a["center"][1]},
    }  # fmt: skip
    rect_unlabelled = {"scale": 1.0, "objpos": {"x": 201.0, "y": 301.0}}
    one_point = _struct_array([{"x": 401.0, "y": 301.0, "id": 7.0, "is_visible": 1.0}])
    rect_one_joint = {"annopoints": {"point": one_point}, "scale": 0.5,
                      "objpos": {"x": 401.0, "y": 301.0}}  # fmt: skip
    rect_b = {
        "x1": 300.0, "y1": 50.0, "x2": 340.0, "y2": 100.0,
        "annopoints": {"point": _points(b["joints"], b["joints_vis"])},
        "scale": b["scale"],
        "objpos": {"x": b["center"][0], "y": b["center"][1]},
    }  # fmt: skip
    annolist = _struct_array(
        [
            {"image": {"name": "005808361.jpg"},
             "annorect": _struct_array([rect_a, rect_unlabelled, rect_one_joint])},
            {"image": {"name": "052475643.jpg"}, "annorect": _struct_array([rect_b])},
            {"image": {"name": "051423444.jpg"},  # a test image: objpos and scale only
             "annorect": _struct_array([{"scale": 3.0, "objpos": {"x": 1.0, "y": 2.0}}])},
            {"image": {"name": "060754485.jpg"}, "annorect": np.zeros((0, 0))},
        ]
    )  # fmt: skip
    single_person = np.empty((4, 1), dtype=object)
    for i, value in enumerate([np.array([[1.0]]), 1.0, np.zeros((0, 0)), np.zeros((0, 0))]):
        single_person[i, 0] = value
    release = {
        "annolist": annolist,
        "img_train": np.array([[1.0, 1.0, 0.0, 1.0]]),
        "version": "12",
        "single_person": single_person,
        "act": _struct_array([{"act_name": "x", "cat_name": "y", "act_id": 1.0}] * 4),
        "video_list": np.array([["abc"]], dtype=object),
    }
    scipy.io.savemat(path, {"RELEASE": release})


def test_mat_release(tmp_path):
    manual = make_manual_dir(tmp_path, annotation=None)
    write_release_mat(manual / "mpii_human_pose_v1_u12_1.mat")
    with no_tensorflow_import():
        builder, examples = build(tmp_path, manual, config="mat")
    assert set(builder.info.splits.keys()) == {"train"}
    assert sorted(examples) == [5808361, 52475643, 60754485]  # the test image is not built
    assert len(examples[60754485]["keypoints"]) == 0  # train image without people: P = 0

    example = examples[5808361]
    assert example["native_keypoints"].shape == (3, 16, 3)
    raw = np.array(record("005808361.jpg")["joints"])
    a = example["native_keypoints"][0]
    np.testing.assert_allclose(a[:, :2], raw - 1.0, rtol=1e-6)  # 1-based -> 0-based
    # is_visible 0 -> 1 (labelled, occluded); '1' -> 2; '0' -> 1; empty -> 2 (unknown); 1 -> 2.
    np.testing.assert_array_equal(a[:5, 2], [1, 2, 1, 2, 2])
    np.testing.assert_allclose(example["head_boxes"][0], [949.0, 69.0, 50.0, 170.0])
    np.testing.assert_allclose(example["boxes"][0], expected_box(raw - 1.0, 1280, 720), rtol=1e-5)
    np.testing.assert_array_equal(example["ignore"], [False, True, False])
    # No joints: ignore region, square of side 200 * scale around objpos - 1 = (200, 300).
    np.testing.assert_allclose(example["boxes"][1], [100.0, 200.0, 200.0, 200.0])
    np.testing.assert_array_equal(example["keypoints"][1], 0)
    # One joint (thorax, no COCO equivalent): box from objpos/scale, not an ignore region.
    np.testing.assert_allclose(example["native_keypoints"][2, 7], [400.0, 300.0, 2.0])
    np.testing.assert_allclose(example["boxes"][2], [350.0, 250.0, 100.0, 100.0])
    np.testing.assert_array_equal(example["head_boxes"][1:], 0)  # absent -> zeros, counted

    # The same person read from the JSON conversion gives the same joints.
    json_builder, json_examples = build(tmp_path / "json", make_manual_dir(tmp_path / "json"))
    np.testing.assert_allclose(
        examples[52475643]["native_keypoints"], json_examples[52475643]["native_keypoints"]
    )
    notes = builder.info.metadata["notes"]["train"]
    assert notes["test_image_not_built"] == 1
    assert notes["visibility_unknown"] == 1
    assert notes["head_box_missing"] == 2
    assert notes["image_without_people"] == 1


# --- bad inputs --------------------------------------------------------------------------------


def _break_record(records, name, key, value):
    next(r for r in records if r["image"] == name)[key] = value


@pytest.mark.parametrize(
    "breakage, message",
    [
        (
            lambda records, manual: _break_record(
                records, "004645041.jpg", "joints", record("004645041.jpg")["joints"][:15]
            ),
            r"record 3 \(image 004645041.jpg\).*expected shape \(16, 2\)",
        ),
        (
            lambda records, manual: _break_record(
                records, "060754485.jpg", "joints", [[float("nan"), 1.0]] * 16
            ),
            r"image 060754485.jpg.*NaN",
        ),
        (lambda records, manual: (manual / "images" / "052475643.jpg").unlink(), "052475643.jpg"),
        (
            lambda records, manual: _truncate(manual / "images" / "005808361.jpg"),
            "005808361.jpg is truncated",
        ),
    ],
    ids=["joints_wrong_length", "nan_coordinate", "missing_image", "truncated_jpeg"],
)
def test_bad_input_raises_naming_the_item(tmp_path, breakage, message):
    records = fixture_records()
    manual = make_manual_dir(tmp_path)
    breakage(records, manual)
    (manual / "annotations" / "mpii_val.json").write_text(json.dumps(records))
    with pytest.raises(BadExampleError, match=message):
        build(tmp_path, manual)


def _truncate(path: pathlib.Path) -> None:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])


def test_missing_annotation_file(tmp_path):
    manual = make_manual_dir(tmp_path, annotation=None)
    with pytest.raises(FileNotFoundError, match="mpii_val.json"):
        build(tmp_path, manual)
    with pytest.raises(FileNotFoundError, match="mpii_human_pose_v1_u12_1.mat"):
        build(tmp_path, manual, config="mat")


def test_skip_counts_bad_images(tmp_path):
    records = fixture_records()
    _break_record(records, "060754485.jpg", "joints", [[float("nan"), 1.0]] * 16)
    manual = make_manual_dir(tmp_path, records=records)
    _truncate(manual / "images" / "005808361.jpg")
    builder, examples = build(tmp_path, manual, on_bad_example="skip")
    assert sorted(examples) == [4645041, 51423444, 52475643]
    assert builder.info.metadata["bad_examples"]["validation"] == {
        "joints_not_finite": 1,
        "truncated_image": 1,
    }
