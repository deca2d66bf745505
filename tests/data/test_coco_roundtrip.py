"""coco_keypoints -> split_to_coco -> pycocotools: the stored split is exactly the annotation file.

Built from the real mmpose COCO fixture, read in place: the ``splits`` option points the builder
at the fixture's own file names, so the fixture folder itself is the manual dir.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from posejax.data.coco import CocoKeypoints
from posejax.data.coco_export import split_to_coco
from posejax.evaluation import coco_keypoint_ap

FIXTURE = pathlib.Path(os.environ["POSEJAX_FIXTURES"]) / "real/mmpose/coco"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    builder = CocoKeypoints(
        data_dir=tmp_path_factory.mktemp("data"),
        splits={"validation": ("test_coco.json", ".")},
    )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=FIXTURE))
    return builder.as_data_source("validation")


def ground_truth_as_results(gt: dict) -> list[dict]:
    """Every scorable person (not crowd, >= 1 labelled keypoint) predicted exactly, score 1."""
    return [
        {
            "image_id": ann["image_id"],
            "category_id": 1,
            "keypoints": ann["keypoints"],
            "score": 1.0,
        }
        for ann in gt["annotations"]
        if not ann["iscrowd"] and ann["num_keypoints"] > 0
    ]


def test_exported_split_scores_its_own_ground_truth_at_ap_one(source):
    gt = split_to_coco(source)
    results = ground_truth_as_results(gt)
    assert len(results) == 12  # 14 people, 2 without keypoints (ignore regions)
    stats = coco_keypoint_ap(gt, results)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR"] == pytest.approx(1.0)


def test_export_matches_the_original_annotation_file(source):
    original = json.loads((FIXTURE / "test_coco.json").read_text())
    exported = split_to_coco(source)
    assert {i["id"]: (i["width"], i["height"]) for i in exported["images"]} == {
        i["id"]: (i["width"], i["height"]) for i in original["images"]
    }

    def people(coco: dict) -> dict[int, list]:
        out: dict[int, list] = {}
        for ann in coco["annotations"]:  # annotation order within an image is preserved
            out.setdefault(ann["image_id"], []).append(ann)
        return out

    ours, theirs = people(exported), people(original)
    assert sorted(ours) == sorted(theirs)
    for image_id, anns in theirs.items():
        assert len(ours[image_id]) == len(anns)
        for mine, ref in zip(ours[image_id], anns, strict=True):
            np.testing.assert_allclose(mine["keypoints"], ref["keypoints"], rtol=0, atol=1e-4)
            np.testing.assert_allclose(mine["bbox"], ref["bbox"], rtol=1e-6, atol=1e-4)
            assert mine["area"] == pytest.approx(ref["area"], rel=1e-6)
            assert mine["num_keypoints"] == ref["num_keypoints"]
            # Crowds and people without keypoints are both ignore regions in posejax.
            assert mine["iscrowd"] == int(ref["iscrowd"] or ref["num_keypoints"] == 0)

    # The stored keypoints are in COCO's own frame: the ground truth as predictions scores
    # AP 1 against the *original* file too.
    stats = coco_keypoint_ap(original, ground_truth_as_results(exported))
    assert stats["AP"] == pytest.approx(1.0)
