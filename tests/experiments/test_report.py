"""The comparison report (posejax.experiments.report) on untrained tiny runs."""

from __future__ import annotations

import json

from untrained_runs import write_untrained_run

from posejax.experiments import report


def test_report_links_the_table_the_per_joint_pck_and_one_prediction_grid(tmp_path):
    runs = tmp_path / "runs"
    for name in ("heatmap", "detector"):
        run = write_untrained_run(runs / name, name)
        metrics = {"OKS_AP": 0.1, "PCK@0.2": 0.5}
        if name == "heatmap":
            metrics |= {f"PCK@0.2/{k}": 0.5 for k in report.skeleton.COCO_KEYPOINTS}
        (run / "final_metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "quick"
    (out).mkdir()
    (out / "plot.png").write_bytes(b"")  # written by the summariser in make compare
    path = report.main(
        [str(runs), "--out", str(out), "--detector", str(runs / "detector"), "--images", "2"]
    )
    text = path.read_text()
    assert "![plot.png](plot.png)" in text and "learning_curves.png" not in text
    assert "(report/predictions.jpg)" in text and "(report/per_joint_pck.png)" in text
    assert "| heatmap | 0.50 |" in text  # per-joint table: the run with per-joint metrics
    import cv2

    picture = cv2.imread(str(out / "report" / "predictions.jpg"))
    # 2 images x 3 columns (detector, heatmap, heatmap+detector); cells >= 256 px + caption.
    assert picture.shape[0] >= 2 * 256 and picture.shape[1] >= 3 * 256
