"""Property-based test of the COCO-format reader (``posejax.data.coco``) on generated malformed
annotation files.

Each example is a valid two-image annotation file with one annotation broken in one way (wrong
lengths, NaN/inf, huge or negative sizes, missing keys, wrong types, boxes outside the image,
dangling image ids) or changed in a way COCO allows (missing area/iscrowd/num_keypoints/bbox,
boolean flags, boxes partly outside, other categories, extra keys). The dataset is then built
for real. Either the change is an error and the build raises ``BadExampleError`` naming the
annotation id (``on_bad_example="raise"``) or drops exactly that image and counts one reason
(``"skip"``), or it is allowed and every stored target is exactly what the file says, never
another exception type and never a silently wrong target.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posejax.data._builder_utils import BadExampleError
from posejax.data.coco import CocoKeypoints

W, H = 64, 48
K = 17
IMAGE_IDS = (1, 2)
FIRST_ANN_ID = 100


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A manual dir with one small JPEG (both images of the file use it)."""
    root = tmp_path_factory.mktemp("coco_property")
    (root / "manual" / "annotations").mkdir(parents=True)
    (root / "manual" / "val2017").mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", pixels)
    assert ok
    (root / "manual" / "val2017" / "img.jpg").write_bytes(jpeg.tobytes())
    return root


# --------------------------------------------------------------------------- valid files


@st.composite
def person(draw, ann_id: int, image_id: int) -> dict:
    flags = draw(st.lists(st.sampled_from([0, 1, 2]), min_size=K, max_size=K))
    keypoints = []
    for v in flags:
        x = draw(st.floats(0, W - 1)) if v else 0
        y = draw(st.floats(0, H - 1)) if v else 0
        keypoints += [x, y, v]
    x, y = draw(st.floats(0, W - 2)), draw(st.floats(0, H - 2))
    w, h = draw(st.floats(1, W - x)), draw(st.floats(1, H - y))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "keypoints": keypoints,
        "num_keypoints": sum(v > 0 for v in flags),
        "bbox": [x, y, w, h],
        "area": draw(st.floats(1, W * H)),
        "iscrowd": 0,
    }


@st.composite
def coco_file(draw) -> dict:
    counts = [draw(st.integers(1, 2)), draw(st.integers(0, 2))]  # image 2 may have no people
    annotations, ann_id = [], FIRST_ANN_ID
    for image_id, count in zip(IMAGE_IDS, counts, strict=True):
        for _ in range(count):
            annotations.append(draw(person(ann_id, image_id)))
            ann_id += 1
    images = [{"id": i, "file_name": "img.jpg", "width": W, "height": H} for i in IMAGE_IDS]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1}]}


def expected_person(ann: dict) -> dict:
    """What a valid annotation is stored as (the boxes of ``person`` lie inside the image)."""
    kp = np.asarray(ann["keypoints"], np.float64).reshape(K, 3)
    return {
        "keypoints": kp.astype(np.float32),
        "boxes": np.asarray(ann["bbox"], np.float32),
        "area": np.float32(ann["area"]),
        "ignore": bool(ann["iscrowd"]) or not (kp[:, 2] > 0).any(),
    }


# --------------------------------------------------------------------------- changes

ERROR, ALLOWED = "error", "allowed"
NOT_NUMBERS = st.sampled_from(["12.5", None, [1.0], {"x": 1}, True, False, "", "nan"])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf, 1e39, -1e39, 10**400])


def _coordinate_index(draw) -> int:
    joint = draw(st.integers(0, K - 1))
    return 3 * joint + draw(st.integers(0, 1))


ERRORS = [
    "keypoints_length", "coordinate_non_finite", "coordinate_not_number", "flag_invalid",
    "keypoints_not_list", "keypoints_missing", "box_size_not_positive", "box_non_finite",
    "box_length", "box_not_numbers", "box_outside", "area_bad", "iscrowd_bad",
    "dangling_image_id", "box_missing_too_few_joints",
]  # fmt: skip
ALLOWED_CHANGES = [
    "area_missing_or_zero", "iscrowd_missing", "num_keypoints_wrong", "boolean_flags",
    "extra_keys", "box_partly_outside", "box_missing", "other_category",
    "crowd_without_keypoints", "integer_coordinates",
]  # fmt: skip


@st.composite
def change(draw, ann: dict, name: str) -> tuple[str, dict | None]:
    """Applies change ``name`` to ``ann`` in place; ``(ERROR | ALLOWED, expected person)``
    (``None``: nothing is stored for it)."""
    expected = expected_person(ann)
    kp = ann["keypoints"]
    x, y, w, h = ann["bbox"]
    if name == "keypoints_length":
        length = draw(st.integers(0, 60).filter(lambda n: n != 3 * K))
        ann["keypoints"] = (kp * 2)[:length]
    elif name == "coordinate_non_finite":
        kp[_coordinate_index(draw)] = draw(NON_FINITE)
    elif name == "coordinate_not_number":
        kp[_coordinate_index(draw)] = draw(NOT_NUMBERS)
    elif name == "flag_invalid":
        kp[3 * draw(st.integers(0, K - 1)) + 2] = draw(
            st.sampled_from([3, -1, 0.5, "2", None, math.nan, [2], 2.5])
        )
    elif name == "keypoints_not_list":
        ann["keypoints"] = draw(st.sampled_from(["0 0 0", {"x": 1}, 51, 1.5]))
    elif name == "keypoints_missing":
        del ann["keypoints"]
    elif name == "box_size_not_positive":
        ann["bbox"][draw(st.integers(2, 3))] = draw(st.floats(-100, 0))
    elif name == "box_non_finite":
        ann["bbox"][draw(st.integers(0, 3))] = draw(NON_FINITE)
    elif name == "box_length":
        ann["bbox"] = (ann["bbox"] * 2)[: draw(st.integers(0, 8).filter(lambda n: n != 4))]
    elif name == "box_not_numbers":
        if draw(st.booleans()):
            ann["bbox"][draw(st.integers(0, 3))] = draw(NOT_NUMBERS)
        else:
            ann["bbox"] = draw(st.sampled_from(["1 2 3 4", {"x": 1}, 4.0]))
    elif name == "box_outside":
        side = draw(st.sampled_from(["left", "right", "above", "below"]))
        gap = draw(st.floats(0, 50))
        ann["bbox"] = {
            "left": [-w - gap, y, w, h],
            "right": [W + gap, y, w, h],
            "above": [x, -h - gap, w, h],
            "below": [x, H + gap, w, h],
        }[side]
    elif name == "area_bad":
        ann["area"] = draw(st.sampled_from([-1.0, -1e-3, math.nan, math.inf, "big", True, [1]]))
    elif name == "iscrowd_bad":
        ann["iscrowd"] = draw(st.sampled_from(["yes", 1.5, None, [0], {"crowd": 1}]))
    elif name == "dangling_image_id":
        ann["image_id"] = draw(st.sampled_from([999, "1", None, True, -2]))
    elif name == "box_missing_too_few_joints":
        del ann["bbox"]
        keep = draw(st.integers(-1, K - 1))  # at most one labelled joint
        for k in range(K):
            if k != keep:
                kp[3 * k : 3 * k + 3] = [0, 0, 0]
        if keep >= 0:
            kp[3 * keep + 2] = 2
    # ---- allowed changes, with what is stored instead
    elif name == "area_missing_or_zero":
        if draw(st.booleans()):
            del ann["area"]
        else:
            ann["area"] = draw(st.sampled_from([0, 0.0, None]))
        expected["area"] = np.float32(w * h)
    elif name == "iscrowd_missing":
        del ann["iscrowd"]
    elif name == "num_keypoints_wrong":
        ann["num_keypoints"] = draw(st.sampled_from([-1, 99, 0]))
    elif name == "boolean_flags":
        for k in range(K):
            kp[3 * k + 2] = kp[3 * k + 2] > 0
        expected["keypoints"][:, 2] = np.where(expected["keypoints"][:, 2] > 0, 2, 0)
    elif name == "extra_keys":
        ann.update(segmentation=[[1, 2, 3, 4]], score=0.3, note="extra")
    elif name == "box_partly_outside":
        dx, dy = draw(st.floats(0.5, 20)), draw(st.floats(0.5, 20))
        ann["bbox"] = [x - dx, y - dy, w + 2 * dx, h + 2 * dy]
        x0, y0 = max(x - dx, 0.0), max(y - dy, 0.0)
        x1, y1 = min(x + w + dx, float(W)), min(y + h + dy, float(H))
        expected["boxes"] = np.asarray([x0, y0, x1 - x0, y1 - y0], np.float32)
    elif name == "box_missing":
        labelled = np.asarray(kp, np.float64).reshape(K, 3)
        labelled = labelled[labelled[:, 2] > 0, :2]
        del ann["bbox"]
        if len(labelled) < 2:
            return ERROR, None  # nothing to derive a box from
        (x0, y0), (x1, y1) = labelled.min(0), labelled.max(0)
        x1, y1 = min(x0 + max(x1 - x0, 1.0), float(W)), min(y0 + max(y1 - y0, 1.0), float(H))
        expected["boxes"] = np.asarray([x0, y0, x1 - x0, y1 - y0], np.float32)
    elif name == "other_category":
        ann["category_id"] = draw(st.sampled_from([2, 0, 18]))
        return ALLOWED, None  # dropped: not a person
    elif name == "crowd_without_keypoints":
        del ann["keypoints"]
        ann["iscrowd"] = 1
        expected["keypoints"] = np.zeros((K, 3), np.float32)
        expected["ignore"] = True
    elif name == "integer_coordinates":
        ann["keypoints"] = [int(round(v)) if i % 3 != 2 else v for i, v in enumerate(kp)]
        rounded = np.asarray(ann["keypoints"], np.float64).reshape(K, 3)
        expected["keypoints"] = rounded.astype(np.float32)
    else:
        raise AssertionError(name)
    return (ALLOWED if name in ALLOWED_CHANGES else ERROR), expected


# --------------------------------------------------------------------------- the property


def build(root: Path, coco: dict, policy: str):
    (root / "manual" / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(coco))
    data_dir = tempfile.mkdtemp(dir=root)
    builder = CocoKeypoints(data_dir=data_dir, on_bad_example=policy)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual"))
    )
    source = builder.as_data_source("validation")
    return builder, {int(e["image_id"]): e for e in source}


@pytest.mark.parametrize("name", ERRORS + ALLOWED_CHANGES)
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), policy=st.sampled_from(["raise", "skip"]))
def test_reader_raises_naming_the_annotation_or_stores_exactly_the_file(
    workdir, name, data, policy
):
    coco = data.draw(coco_file())
    original = copy.deepcopy(coco)
    index = data.draw(st.integers(0, len(coco["annotations"]) - 1))
    target = coco["annotations"][index]
    kind, expected_target = data.draw(change(target, name))
    image_of_target = original["annotations"][index]["image_id"]

    if kind == ERROR and policy == "raise":
        with pytest.raises(BadExampleError, match=rf"annotation id {target['id']}\b"):
            build(workdir, coco, policy)
        return

    builder, examples = build(workdir, coco, policy)
    skipped = builder.info.metadata["bad_examples"]["validation"]
    dangling = name == "dangling_image_id"
    if kind == ERROR:  # skip: that image is dropped (a dangling annotation only), one count
        assert sum(skipped.values()) == 1, (name, skipped)
        assert (image_of_target in examples) == dangling, name
    else:
        assert skipped == {}, (name, skipped)
        assert sorted(examples) == list(IMAGE_IDS)

    for image_id, example in examples.items():
        wanted = [
            expected_target if ann is target else expected_person(ann)
            for ann in coco["annotations"]
            if ann.get("image_id") == image_id and not (ann is target and dangling)
        ]
        wanted = [p for p in wanted if p is not None]  # other_category: not a person
        assert len(example["keypoints"]) == len(wanted), (name, image_id)
        for p, want in enumerate(wanted):
            np.testing.assert_array_equal(example["keypoints"][p], want["keypoints"], err_msg=name)
            np.testing.assert_allclose(example["boxes"][p], want["boxes"], rtol=1e-6, atol=1e-5,
                                       err_msg=name)  # fmt: skip
            np.testing.assert_allclose(example["area"][p], want["area"], rtol=1e-6, err_msg=name)
            assert bool(example["ignore"][p]) == want["ignore"], name
