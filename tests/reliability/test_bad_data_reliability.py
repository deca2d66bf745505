"""Bad input data: every case raises naming the file / annotation id, or is skipped and counted.

Built from the real 4-image COCO fixture into ``tmp_path`` (see ``tests/data/test_coco_builder.py``
for the cases covered there: truncated JPEG, missing image, wrong keypoint count, NaN
coordinate, zero box). Here: inf coordinates, negative box sizes, undecodable images, wrong
types, people entirely outside the image, images with no people (through the builder *and* the
pipeline in both input modes), and the ``data.on_bad_example`` key routed from a config through
``open_split`` to the builder, with the skipped counts reported by the run.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hydra import compose, initialize_config_dir

from posejax.data import schema
from posejax.data._builder_utils import BadExampleError
from posejax.data.coco import CocoKeypoints
from posejax.data.pipeline import (
    BOTTOM_UP,
    TOP_DOWN,
    PipelineConfig,
    make_eval_batches,
    make_train_iterator,
    person_index,
)
from posejax.data.splits import open_split
from posejax.formulations.paf import PartAffinityFields
from posejax.runs.setup import data_config

FIXTURE = pathlib.Path(os.environ["POSEJAX_FIXTURES"]) / "real/mmpose/coco"
CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "conf"

EMPTY_IMAGE_ID = 999  # an extra image (a copy of image 785) without any annotation


def fixture_json() -> dict:
    return json.loads((FIXTURE / "test_coco.json").read_text())


def annotation(coco: dict, ann_id: int) -> dict:
    return next(a for a in coco["annotations"] if a["id"] == ann_id)


def manual_dir(root: pathlib.Path, coco: dict, *, empty_image: bool = False) -> pathlib.Path:
    """COCO layout under ``root/manual`` (annotations/person_keypoints_val2017.json,
    val2017/*.jpg as symlinks); ``empty_image`` adds image 999, a copy of 785 with no people."""
    manual = root / "manual"
    (manual / "annotations").mkdir(parents=True)
    (manual / "val2017").mkdir()
    for jpg in FIXTURE.glob("*.jpg"):
        (manual / "val2017" / jpg.name).symlink_to(jpg)
    if empty_image:
        entry = dict(next(i for i in coco["images"] if i["id"] == 785))
        entry.update(id=EMPTY_IMAGE_ID, file_name="000000000999.jpg")
        coco["images"].append(entry)
        (manual / "val2017" / entry["file_name"]).symlink_to(FIXTURE / "000000000785.jpg")
    (manual / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(coco))
    return manual


def build(root: pathlib.Path, manual: pathlib.Path, **kwargs):
    builder = CocoKeypoints(data_dir=root / "data", **kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return builder, builder.as_data_source("validation")


def _set(ann_id: int, key: str, value):
    return lambda coco: annotation(coco, ann_id).__setitem__(key, value)


def _set_item(ann_id: int, key: str, index: int, value):
    return lambda coco: annotation(coco, ann_id)[key].__setitem__(index, value)


# (break the annotations, annotation id named, what the message says was expected)
ANNOTATION_CASES = {
    "inf_coordinate": (_set_item(230195, "keypoints", 1, float("inf")), 230195, "NaN/inf"),
    "negative_box_width": (_set_item(460541, "bbox", 2, -5.0), 460541, "width and height"),
    "negative_box_height": (_set_item(460541, "bbox", 3, -0.1), 460541, "width and height"),
    "box_outside_image": (
        _set(442619, "bbox", [700.0, 10.0, 50.0, 80.0]),  # image 785 is 640 wide
        442619,
        "outside the 640x425",
    ),
    "box_above_image": (_set(442619, "bbox", [10.0, -200.0, 50.0, 80.0]), 442619, "outside"),
    "keypoints_not_a_list": (_set(437295, "keypoints", "17 points"), 437295, "'keypoints' list"),
    "keypoints_too_short": (_set(437295, "keypoints", [1.0] * 48), 437295, "got 48"),
    "string_coordinate": (_set_item(437295, "keypoints", 0, "141.5"), 437295, "numbers"),
    "boolean_coordinate": (_set_item(437295, "keypoints", 1, True), 437295, "numbers"),
    "visibility_flag_3": (_set_item(437295, "keypoints", 2, 3), 437295, "visibility"),
    "box_wrong_length": (_set(488308, "bbox", [1.0, 2.0, 3.0]), 488308, r"shape \(4,\)"),
    "box_not_numbers": (_set(488308, "bbox", "big"), 488308, "numbers"),
    "negative_area": (_set(488308, "area", -3.0), 488308, "area"),
    "area_not_a_number": (_set(488308, "area", "large"), 488308, "area"),
    "missing_keypoints": (
        lambda coco: annotation(coco, 1717641).pop("keypoints"),
        1717641,
        "'keypoints' list",
    ),
}


@pytest.mark.parametrize("case", sorted(ANNOTATION_CASES))
def test_bad_annotation_raises_naming_the_annotation_id(tmp_path, case):
    breakage, ann_id, expected = ANNOTATION_CASES[case]
    coco = fixture_json()
    breakage(coco)
    with pytest.raises(BadExampleError, match=rf"annotation id {ann_id}\b.*{expected}"):
        build(tmp_path, manual_dir(tmp_path, coco))


def test_undecodable_image_raises_naming_the_file(tmp_path):
    manual = manual_dir(tmp_path, fixture_json())
    target = manual / "val2017" / "000000197388.jpg"
    target.unlink()
    target.write_bytes(b"this is not an image at all")
    with pytest.raises(BadExampleError, match=r"000000197388\.jpg.*cannot be decoded"):
        build(tmp_path, manual)


def test_skip_counts_every_reason_and_keeps_the_good_images(tmp_path):
    coco = fixture_json()
    for name in ("inf_coordinate", "box_outside_image", "negative_box_width"):
        ANNOTATION_CASES[name][0](coco)  # images 40083, 785, 196141
    builder, source = build(tmp_path, manual_dir(tmp_path, coco), on_bad_example="skip")
    assert sorted(int(e["image_id"]) for e in source) == [197388]
    assert builder.info.metadata["bad_examples"]["validation"] == {
        "box_not_positive": 1,
        "box_outside_image": 1,
        "keypoint_not_finite": 1,
    }


def test_labelled_joints_outside_the_image_are_kept_and_counted(tmp_path):
    coco = fixture_json()
    ann = annotation(coco, 442619)  # image 785, 640 x 425
    for k in range(17):
        if ann["keypoints"][3 * k + 2] > 0:
            ann["keypoints"][3 * k] = 700.0 + k  # every labelled joint right of the image
    builder, source = build(tmp_path, manual_dir(tmp_path, coco))
    example = next(e for e in source if int(e["image_id"]) == 785)
    np.testing.assert_array_equal(
        example["keypoints"][0], np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
    )
    assert builder.info.metadata["notes"]["validation"]["labelled_joint_outside_image"] == 17
    # The top-down crop of that person is finite and has no labelled target joint left.
    cfg = PipelineConfig(mode=TOP_DOWN, input_size=(32, 24), batch_size=16)
    batch = next(make_eval_batches(source, cfg))
    assert np.isfinite(batch["keypoints"]).all()
    crops = batch["image_id"] == 785
    assert crops.sum() == 1 and not batch["keypoints"][crops][..., 2].any()


def test_image_without_people_is_kept_and_gives_background_targets(tmp_path):
    coco = fixture_json()
    builder, source = build(tmp_path, manual_dir(tmp_path, coco, empty_image=True))
    ids = [int(e["image_id"]) for e in source]
    empty = ids.index(EMPTY_IMAGE_ID)
    assert source[empty][schema.KEYPOINTS].shape == (0, 17, 3)
    assert source[empty][schema.BOXES].shape == (0, 4)

    # Top-down: no crop comes from it.
    assert empty not in person_index(source)[:, 0]

    # Bottom-up: a whole-image example with no valid person, nothing masked, and an
    # all-background target (zero confidence maps and fields, full loss mask).
    cfg = PipelineConfig(mode=BOTTOM_UP, input_size=(64, 64), max_people=4, batch_size=8)
    batch = next(make_eval_batches(source, cfg))
    b = [int(i) for i in batch["image_id"]].index(EMPTY_IMAGE_ID)
    assert not batch["valid"][b].any() and not batch["keypoints"][b].any()
    assert (batch["loss_mask"][b] == 1).all()
    paf = PartAffinityFields(stride=4, input_size=(64, 64), stages=1)
    targets = paf.encode({k: batch[k][b : b + 1] for k in ("keypoints", "valid", "loss_mask")})
    assert not np.asarray(targets["heatmaps"]).any() and not np.asarray(targets["pafs"]).any()
    assert (np.asarray(targets["mask"]) == 1).all()


def test_a_source_of_only_empty_images(tmp_path):
    coco = fixture_json()
    coco["annotations"] = []
    _, source = build(tmp_path, manual_dir(tmp_path, coco))
    assert all(len(e[schema.KEYPOINTS]) == 0 for e in source)
    # Bottom-up trains on background; top-down has nothing to crop and says why.
    bottom_up = PipelineConfig(mode=BOTTOM_UP, input_size=(32, 32), max_people=2, batch_size=2)
    batch = next(make_train_iterator(source, bottom_up))
    assert not batch["valid"].any()
    top_down = PipelineConfig(mode=TOP_DOWN, input_size=(32, 24), batch_size=2)
    with pytest.raises(ValueError, match="no training examples.*4 images.*labelled keypoints"):
        make_train_iterator(source, top_down)


def test_data_on_bad_example_reaches_the_builder_and_the_run_reports_skips(tmp_path, caplog):
    coco = fixture_json()
    ANNOTATION_CASES["inf_coordinate"][0](coco)  # image 40083
    manual = manual_dir(tmp_path, coco)
    overrides = [
        "data=coco_fixture",
        f"data.manual_dir={manual}",
        f"data.data_dir={tmp_path / 'data'}",
        "data.builder_kwargs.splits.validation=[annotations/person_keypoints_val2017.json,val2017]",
    ]

    def data_for(*extra):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[*overrides, *extra])
        return data_config(cfg, TOP_DOWN, batch_size=2, eval_batch_size=2, seed=0)

    with pytest.raises(BadExampleError, match="annotation id 230195"):
        open_split(data_for(), "validation")  # the fixture preset raises

    with caplog.at_level(logging.WARNING):
        source = open_split(data_for("data.on_bad_example=skip"), "validation")
    assert sorted(int(e["image_id"]) for e in source) == [785, 196141, 197388]
    reports = [r.getMessage() for r in caplog.records if r.name == "posejax.data.splits"]
    assert any("1 images were skipped" in m and "keypoint_not_finite" in m for m in reports)
