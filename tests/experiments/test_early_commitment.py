"""E7's tool (posejax.experiments.early_commitment): crowding bins, detector recall, AP per bin."""

from __future__ import annotations

import numpy as np
import pytest
from untrained_runs import write_untrained_run

from posejax.experiments import early_commitment as e7


def _person(ann_id, image_id, box, kps=3):
    x, y, w, h = box
    keypoints = []
    for k in range(17):
        keypoints += [x + w / 2, y + (k + 1) * h / 18, 2] if k < kps else [0, 0, 0]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": list(box),
        "area": float(w * h),
        "iscrowd": 0,
        "keypoints": keypoints,
        "num_keypoints": kps,
    }


GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 1, "name": "person"}],
    "annotations": [
        _person(1, 1, (10, 10, 20, 40)),
        _person(2, 1, (20, 10, 20, 40)),  # IoU 1/3 with person 1
        _person(3, 2, (50, 50, 20, 40)),  # alone
    ],
}


def test_crowding_is_the_largest_box_iou_and_the_people_per_image():
    crowd = e7.crowding(GT)
    assert crowd[1]["overlap"] == pytest.approx(1 / 3) and crowd[2]["overlap"] == pytest.approx(
        1 / 3
    )
    assert crowd[3] == {"overlap": 0.0, "people": 1}
    assert crowd[1]["people"] == 2


def test_detector_recall_matches_each_person_once_best_score_first():
    gt_boxes = np.array([[0, 0, 10, 10], [50, 50, 10, 10]], float)
    boxes = np.array([[1, 0, 10, 10], [0, 1, 10, 10], [80, 80, 5, 5]], float)
    hits = e7.matched_people(gt_boxes, boxes, np.array([0.9, 0.8, 0.7]))
    assert hits.tolist() == [True, False]  # two boxes on one person: one match


def test_ap_per_bin_ignores_the_people_of_other_bins():
    perfect = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in GT["annotations"]
    ]
    only_alone = [r for r in perfect if r["image_id"] == 2]
    rows = e7.binned_rows(
        GT, {"all": perfect, "alone": only_alone}, {1: True, 2: False, 3: True}, e7.crowding(GT)
    )
    by = {(r["run"], r["overrides"]["axis"], r["overrides"]["bin"]): r["metrics"] for r in rows}
    assert by[("all", "overlap", "0.0-0.1")]["OKS_AP"] == pytest.approx(1.0)
    assert by[("all", "overlap", "0.3-1.0")]["OKS_AP"] == pytest.approx(1.0)
    assert by[("alone", "overlap", "0.0-0.1")]["OKS_AP"] == pytest.approx(1.0)
    assert by[("alone", "overlap", "0.3-1.0")]["OKS_AP"] == 0.0  # its people were not found
    assert by[("all", "people", "1-2")]["people"] == 3


@pytest.mark.slow
def test_e7_tool_runs_the_three_systems_and_writes_a_table(tmp_path):
    runs = {name: write_untrained_run(tmp_path / name, name) for name in ("heatmap", "detector")}
    runs["paf"] = write_untrained_run(tmp_path / "paf", "paf_quick")
    out = tmp_path / "e7"
    rows = e7.main(
        ["--top-down", str(runs["heatmap"]), "--detector", str(runs["detector"])]
        + ["--bottom-up", str(runs["paf"]), "--out", str(out), "--num-images", "4"]
        + ["--det-score-threshold", "0"]
    )
    systems = {r["run"] for r in rows}
    assert systems == {e7.TOP_DOWN_DETECTED, e7.TOP_DOWN_GT, e7.BOTTOM_UP}
    recalls = [r["metrics"]["detector_recall"] for r in rows if r["run"] == e7.TOP_DOWN_DETECTED]
    assert recalls and all(0.0 <= v <= 1.0 for v in recalls)
    assert (out / "summary.md").exists() and (out / "plot.png").exists()
