"""coco_keypoints builder: built from the real mmpose COCO fixture into tmp_path."""

from __future__ import annotations

import copy
import json
import os
import pathlib

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tf_guard import no_tensorflow_import

from posejax.data._builder_utils import BadExampleError
from posejax.data.coco import CocoKeypoints

FIXTURE = pathlib.Path(os.environ["POSEJAX_FIXTURES"]) / "real/mmpose/coco"


def fixture_json() -> dict:
    return json.loads((FIXTURE / "test_coco.json").read_text())


def make_manual_dir(root: pathlib.Path, coco: dict | None = None) -> pathlib.Path:
    """COCO layout: annotations/person_keypoints_val2017.json + val2017/*.jpg (symlinks)."""
    manual = root / "manual"
    (manual / "annotations").mkdir(parents=True)
    (manual / "val2017").mkdir()
    text = json.dumps(coco if coco is not None else fixture_json())
    (manual / "annotations" / "person_keypoints_val2017.json").write_text(text)
    for jpg in FIXTURE.glob("*.jpg"):
        (manual / "val2017" / jpg.name).symlink_to(jpg)
    return manual


def build(root: pathlib.Path, manual: pathlib.Path, **kwargs):
    builder = CocoKeypoints(data_dir=root / "data", **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    examples = {int(e["image_id"]): e for e in builder.as_data_source("validation")}
    return builder, examples


def annotation(coco: dict, ann_id: int) -> dict:
    return next(a for a in coco["annotations"] if a["id"] == ann_id)


def person_index(coco: dict, ann_id: int) -> int:
    ann = annotation(coco, ann_id)
    same_image = [a["id"] for a in coco["annotations"] if a["image_id"] == ann["image_id"]]
    return same_image.index(ann_id)


def test_fixture_round_trip(tmp_path):
    coco = fixture_json()
    with no_tensorflow_import():
        builder, examples = build(tmp_path, make_manual_dir(tmp_path))
    assert set(builder.info.splits.keys()) == {"validation"}  # no train files: train not built
    assert sorted(examples) == [785, 40083, 196141, 197388]
    assert sum(len(e["keypoints"]) for e in examples.values()) == 14
    assert [len(examples[i]["ignore"]) for i in (785, 40083, 196141, 197388)] == [1, 3, 5, 5]

    for ann_id in (442619, 1717641, 543117):
        ann = annotation(coco, ann_id)
        example, p = examples[ann["image_id"]], person_index(coco, ann_id)
        raw = np.array(ann["keypoints"], np.float32).reshape(17, 3)
        np.testing.assert_array_equal(example["keypoints"][p], raw)  # no shift for COCO
        np.testing.assert_allclose(example["boxes"][p], ann["bbox"], rtol=1e-6)
        np.testing.assert_allclose(example["area"][p], ann["area"], rtol=1e-6)
        assert not example["ignore"][p]
    # 1717641 has unlabelled joints: stored exactly as (0, 0, 0).
    kp = examples[196141]["keypoints"][person_index(coco, 1717641)]
    assert np.any(kp[:, 2] == 0) and np.all(kp[kp[:, 2] == 0] == 0)
    # The two num_keypoints == 0 people are ignore regions.
    for ann_id in (1202706, 508900):
        ann = annotation(coco, ann_id)
        assert examples[ann["image_id"]]["ignore"][person_index(coco, ann_id)]
    assert sum(int(e["ignore"].sum()) for e in examples.values()) == 2

    example = examples[785]
    assert example["keypoints"].dtype == np.float32 and example["ignore"].dtype == np.bool_
    original = cv2.imread(str(FIXTURE / "000000000785.jpg"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(example["image"], original)  # RGB, bytes passed through
    assert builder.info.metadata["bad_examples"] == {"validation": {}}


def test_large_ids_and_repairs(tmp_path):
    coco = fixture_json()
    big = 2**40 + 785
    for entry in coco["images"]:
        if entry["id"] == 785:
            entry["id"] = big
    ann = annotation(coco, 442619)
    ann["image_id"] = big
    ann["iscrowd"] = True  # boolean crowd flag
    ann["bbox"] = [-10.0, 44.73, 218.7, 346.68]  # leaves the image on the left: clipped
    del ann["area"]  # derived from the clipped box
    flags_ann = annotation(coco, 198196)
    flags_ann["keypoints"][2::3] = [v > 0 for v in flags_ann["keypoints"][2::3]]  # booleans
    builder, examples = build(tmp_path, make_manual_dir(tmp_path, coco))

    assert big in examples and 785 not in examples
    assert int(examples[big]["image_id"]) == big
    person = examples[big]
    assert person["ignore"][0]
    np.testing.assert_allclose(person["boxes"][0], [0.0, 44.73, 208.7, 346.68], rtol=1e-6)
    np.testing.assert_allclose(person["area"][0], 208.7 * 346.68, rtol=1e-5)
    kp = examples[40083]["keypoints"][0]
    raw = np.array(annotation(fixture_json(), 198196)["keypoints"]).reshape(17, 3)
    np.testing.assert_array_equal(kp[:, 2], np.where(raw[:, 2] > 0, 2, 0))
    notes = builder.info.metadata["notes"]["validation"]
    assert notes["box_clipped"] == 1 and notes["area_from_box"] == 1


def _truncate_image(manual: pathlib.Path, name: str) -> None:
    target = manual / "val2017" / name
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[: len(data) // 2])


def _remove_image(manual: pathlib.Path, name: str) -> None:
    (manual / "val2017" / name).unlink()


def _set_keypoints(coco: dict, values: list) -> None:
    annotation(coco, 230195)["keypoints"] = values


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda coco, manual: _truncate_image(manual, "000000040083.jpg"), "000000040083.jpg"),
        (lambda coco, manual: _remove_image(manual, "000000196141.jpg"), "000000196141.jpg"),
        (lambda coco, manual: _set_keypoints(coco, [1.0] * 50), "annotation id 230195.*got 50"),
        (
            lambda coco, manual: annotation(coco, 230195)["keypoints"].__setitem__(3, float("nan")),
            "annotation id 230195.*NaN",
        ),
        (
            lambda coco, manual: annotation(coco, 460541)["bbox"].__setitem__(2, 0.0),
            "annotation id 460541.*width and height",
        ),
    ],
    ids=["truncated_jpeg", "missing_image", "wrong_length", "nan_coordinate", "zero_box"],
)
def test_bad_input_raises_naming_the_item(tmp_path, breakage, message):
    coco = fixture_json()
    manual = make_manual_dir(tmp_path, coco)
    breakage(coco, manual)
    (manual / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(coco))
    with pytest.raises(BadExampleError, match=message):
        build(tmp_path, manual)


def test_missing_annotation_file(tmp_path):
    manual = make_manual_dir(tmp_path)
    (manual / "annotations" / "person_keypoints_val2017.json").unlink()
    with pytest.raises(FileNotFoundError, match="person_keypoints_val2017.json"):
        build(tmp_path, manual)


def test_skip_counts_bad_images(tmp_path):
    coco = fixture_json()
    annotation(coco, 230195)["keypoints"][3] = float("nan")  # image 40083
    annotation(coco, 437295)["keypoints"] = [0] * 10  # image 197388
    orphan = copy.deepcopy(annotation(coco, 442619))
    orphan.update(id=1, image_id=999)  # refers to no image
    coco["annotations"].append(orphan)
    manual = make_manual_dir(tmp_path, coco)
    _truncate_image(manual, "000000196141.jpg")
    builder, examples = build(tmp_path, manual, on_bad_example="skip")
    assert sorted(examples) == [785]
    assert builder.info.metadata["bad_examples"]["validation"] == {
        "annotation_without_image": 1,
        "keypoint_not_finite": 1,
        "keypoints_wrong_length": 1,
        "truncated_image": 1,
    }
    # The counts survive in the stored dataset info.
    reloaded = tfds.builder("coco_keypoints", data_dir=tmp_path / "data")
    assert reloaded.info.metadata["bad_examples"]["validation"]["truncated_image"] == 1
