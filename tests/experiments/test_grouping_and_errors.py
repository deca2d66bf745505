"""E4 on ground-truth maps (posejax.experiments.grouping) and the error analysis tool."""

from __future__ import annotations

import numpy as np
import pytest

from posejax import skeleton
from posejax.experiments import error_analysis, grouping


def test_grouping_on_ground_truth_maps_writes_a_table_and_finds_the_people(tmp_path):
    rows = grouping.main(
        [
            "--out",
            str(tmp_path),
            "--people",
            "2",
            "--scenes",
            "2",
            "--repeats",
            "1",
            "--variants",
            "greedy",
            "ilp",
            "--missed-example",
            "1",
        ]
    )
    assert [r["overrides"]["grouping"] for r in rows] == ["greedy", "ilp"] * 2
    clean = {r["overrides"]["grouping"]: r["metrics"] for r in rows if "clean" in r["run"]}
    assert clean["greedy"]["OKS_AP"] > 0.5 and clean["ilp"]["OKS_AP"] > 0.5
    assert clean["ilp"]["ms_vs_greedy"] > 0 and clean["greedy"]["ms_vs_greedy"] == 1.0
    assert {r["overrides"]["status"] for r in rows if r["overrides"]["grouping"] == "ilp"} == {
        "optimal"
    }
    assert (tmp_path / "summary.md").exists() and (tmp_path / "plot.png").exists()


def test_noisy_maps_hold_spurious_peaks_and_jittered_candidates():
    formulation = grouping.paf_formulation()
    scenes = grouping.make_scenes(3, 1, 0)
    ((clean_h, clean_p),) = grouping.encode_scenes(formulation, scenes, "clean", 0)
    ((noisy_h, noisy_p),) = grouping.encode_scenes(formulation, scenes, "noisy", 0)
    np.testing.assert_array_equal(clean_p, noisy_p)  # fields exact
    assert not np.allclose(clean_h, noisy_h)
    with pytest.raises(ValueError, match="condition"):
        grouping.encode_scenes(formulation, scenes, "blurred", 0)


def _gt(keypoints: np.ndarray, area: float = 1000.0) -> dict:
    anns = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": 1,
            "keypoints": kp.reshape(-1).tolist(),
            "num_keypoints": int((kp[:, 2] > 0).sum()),
            "area": area,
            "bbox": [0, 0, 40, 80],
            "iscrowd": 0,
        }
        for i, kp in enumerate(keypoints)
    ]
    return {
        "images": [{"id": 1, "width": 128, "height": 128}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": list(skeleton.COCO_KEYPOINTS)}],
    }


def test_error_analysis_separates_good_inversion_and_miss():
    rng = np.random.default_rng(0)
    truth = np.concatenate([rng.uniform(10, 100, (1, 17, 2)), np.full((1, 17, 1), 2.0)], -1)
    gt = _gt(truth)
    perfect = [
        {"image_id": 1, "category_id": 1, "keypoints": truth[0].reshape(-1).tolist(), "score": 1.0}
    ]
    report = error_analysis.analyse(perfect, gt)
    assert report["what_if_AP"]["as predicted"] == pytest.approx(1.0)
    assert report["keypoint_error_share"]["good"] == 1.0
    # Left and right wrists swapped (inversion), the nose far away (miss).
    wrong = truth[0].copy()
    wrong[[9, 10]] = wrong[[10, 9]]
    wrong[0, :2] += 60.0
    results = [
        {"image_id": 1, "category_id": 1, "keypoints": wrong.reshape(-1).tolist(), "score": 1.0}
    ]
    report = error_analysis.analyse(results, gt)
    joints = report["per_joint"]
    assert joints["left_wrist"]["inversion"] == 1.0 and joints["right_wrist"]["inversion"] == 1.0
    assert joints["nose"]["miss"] == 1.0 and joints["left_hip"]["good"] == 1.0
    ap = report["what_if_AP"]
    assert ap["face = ground truth"] >= ap["as predicted"]
    assert "| left_wrist |" in error_analysis.to_markdown(report, "t")
