"""``python -m posejax.predict`` and the runners, on real COCO photos with untrained tiny models.

Nothing is trained: a run directory is written the way the training loop writes it
(``config.json`` from the composed config, an orbax checkpoint of the initial ``TrainState``),
which is all ``restore_run`` reads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from typing import ClassVar

import cv2
import numpy as np
import pytest
from untrained_runs import write_untrained_run

from posejax.formulations.base import BOTTOM_UP, TOP_DOWN, DisplayMap, Formulation, PosePrediction
from posejax.inference.predict import main
from posejax.inference.runners import STAGES, BottomUpRunner, TopDownRunner, make_runner

COCO = pathlib.Path(os.environ["POSEJAX_FIXTURES"]) / "real/mmpose/coco"
PHOTO = COCO / "000000196141.jpg"  # 640x429, five annotated people (one with no keypoints)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    made: dict[str, pathlib.Path] = {}

    def get(formulation: str) -> pathlib.Path:
        if formulation not in made:
            root = tmp_path_factory.mktemp(f"run_{formulation}")
            made[formulation] = write_untrained_run(root / "run", formulation)
        return made[formulation]

    return get


def read_results(out: pathlib.Path) -> list[dict]:
    results = json.loads((out / "predictions.json").read_text())
    assert isinstance(results, list)
    for r in results:  # the COCO keypoint results format
        assert set(r) == {"image_id", "category_id", "keypoints", "score"}
        assert r["category_id"] == 1 and len(r["keypoints"]) == 51
        assert np.isfinite(r["keypoints"]).all() and np.isfinite(r["score"])
    return results


def assert_png_like(png: pathlib.Path, photo: pathlib.Path) -> None:
    picture = cv2.imread(str(png))
    assert picture is not None, f"{png} is not a readable image"
    assert picture.shape == cv2.imread(str(photo)).shape


def gt_boxes_of(image_id: int) -> int:
    gt = json.loads((COCO / "test_coco.json").read_text())
    return sum(
        1 for a in gt["annotations"] if a["image_id"] == image_id and not a.get("iscrowd", 0)
    )


def test_top_down_with_ground_truth_boxes(run_dirs, tmp_path):
    out = tmp_path / "out"
    assert main([str(run_dirs("heatmap")), str(PHOTO), "--gt", str(COCO / "test_coco.json"),
                 "--out", str(out)]) == 0  # fmt: skip
    assert_png_like(out / "000000196141.png", PHOTO)
    results = read_results(out)
    assert len(results) == gt_boxes_of(196141) == 5
    assert {r["image_id"] for r in results} == {196141}


def test_top_down_whole_image_by_default_on_a_folder(run_dirs, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg"):
        shutil.copy(COCO / name, folder / name)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main([str(run_dirs("regression")), str(folder), "--out", str(out)]) == 0
    for name in ("000000000785", "000000040083"):
        assert_png_like(out / f"{name}.png", folder / f"{name}.jpg")
    results = read_results(out)
    # One person per image (the whole image), ids from the file names.
    assert sorted(r["image_id"] for r in results) == [785, 40083]


def test_top_down_detections_threshold_and_overlays(run_dirs, tmp_path):
    detections = json.loads((COCO / "test_coco_det_AP_H_56.json").read_text())
    kept = [d for d in detections if d["image_id"] == 196141 and d["score"] >= 0.8]
    assert 0 < len(kept) < sum(d["image_id"] == 196141 for d in detections)
    out = tmp_path / "out"
    argv = [str(run_dirs("segmentation")), str(PHOTO), "--out", str(out), "--overlays",
            "--detections", str(COCO / "test_coco_det_AP_H_56.json"),
            "--det-score-threshold", "0.8", "--batch-size", "4"]  # fmt: skip
    assert main(argv) == 0
    assert_png_like(out / "000000196141.png", PHOTO)
    assert len(read_results(out)) == len(kept)
    overlays = sorted(out.glob("000000196141_*.png"))
    assert {p.stem.split("_", 1)[1] for p in overlays} == {"classes", "joint_probability"}
    for path in overlays:
        assert cv2.imread(str(path)) is not None


def test_bottom_up_reads_the_whole_image(run_dirs, tmp_path):
    out = tmp_path / "out"
    argv = [str(run_dirs("paf")), str(PHOTO), "--out", str(out), "--overlays",
            "--gt", str(COCO / "test_coco.json")]  # fmt: skip
    assert main(argv) == 0
    assert_png_like(out / "000000196141.png", PHOTO)
    results = read_results(out)
    assert {r["image_id"] for r in results} <= {196141}
    assert (out / "000000196141_paf_magnitude.png").is_file()


# --------------------------------------------------------------------------- runner geometry


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputCentre(Formulation):
    """Decodes every input to one person standing on the input's centre (joint 0 not found)."""

    input_mode: ClassVar[str] = TOP_DOWN

    def make_head(self, in_channels, *, rngs):
        raise NotImplementedError

    def encode(self, batch):
        raise NotImplementedError

    def loss(self, outputs, targets):
        raise NotImplementedError

    def oracle_outputs(self, targets):
        raise NotImplementedError

    def decode(self, outputs, *, stage=-1):
        self.stage_index(stage)
        h, w = self.input_size
        pose = np.zeros((1, self.num_keypoints, 3), np.float32)
        pose[..., :] = [(w - 1) / 2, (h - 1) / 2, 0.9]
        pose[0, 0] = 0.0
        return [PosePrediction(pose.copy(), np.array([0.5])) for _ in outputs["images"]]

    @property
    def display_specs(self):
        return {"brightness": DisplayMap.intensity()}

    def display_maps(self, outputs, *, stage=-1):
        self.stage_index(stage)
        return {"brightness": outputs["images"].mean(axis=-1)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputCentreBottomUp(InputCentre):
    input_mode: ClassVar[str] = BOTTOM_UP


def recording_predict(calls: list):
    def predict(images):
        calls.append(images.shape)
        return {"images": images.astype(np.float32)}

    return predict


def test_top_down_runner_maps_crops_back_to_their_boxes():
    calls: list = []
    form = InputCentre(stride=4, input_size=(32, 24))
    runner = make_runner(form, recording_predict(calls), input_size=(32, 24), batch_size=2)
    assert isinstance(runner, TopDownRunner)
    image = np.zeros((120, 200, 3), np.uint8)
    boxes = np.array([[10, 20, 40, 80], [100, 0, 30, 30], [0, 0, 200, 120]], float)
    result = runner(image, boxes, np.array([0.8, 1.0, 0.5]), keep_maps=True)
    assert calls == [(2, 32, 24, 3), (2, 32, 24, 3)]  # the last batch is padded
    centres = boxes[:, :2] + boxes[:, 2:] / 2  # top_down_affine: box centre -> input centre
    np.testing.assert_allclose(result.poses[:, 1:, :2], np.repeat(centres[:, None], 16, 1))
    np.testing.assert_array_equal(result.poses[:, 0], 0.0)  # not found: (0, 0, 0)
    np.testing.assert_allclose(result.scores, [0.4, 0.5, 0.25])
    np.testing.assert_array_equal(result.person_input, [0, 1, 2])
    assert result.inputs.shape == (3, 32, 24, 3) and result.maps["brightness"].shape == (3, 32, 24)
    assert result.map_specs == {"brightness": DisplayMap.intensity()}
    assert set(result.timing) == set(STAGES)
    empty = runner(image, np.zeros((0, 4)))
    assert empty.poses.shape == (0, 17, 3) and empty.scores.shape == (0,)
    assert runner.uses_boxes
    with pytest.raises(ValueError, match=r"needs the person boxes.*\[\[-0.5, -0.5, 200, 120\]\]"):
        runner(image)
    with pytest.raises(ValueError, match="2 box scores for 3 boxes"):
        runner(image, boxes, np.array([0.8, 1.0]))


def test_bottom_up_runner_letterboxes_the_whole_image():
    calls: list = []
    form = InputCentreBottomUp(stride=4, input_size=(64, 64))
    runner = make_runner(form, recording_predict(calls), input_size=(64, 64))
    assert isinstance(runner, BottomUpRunner)
    image = np.full((60, 100, 3), 200, np.uint8)
    result = runner(image)
    assert calls == [(1, 64, 64, 3)]
    np.testing.assert_allclose(result.poses[0, 1:, :2], np.tile([49.5, 29.5], (16, 1)))
    # Called like a top-down runner: the boxes and their scores are accepted and not used.
    assert not runner.uses_boxes
    with_boxes = runner(image, np.array([[10, 20, 30, 30]], float), np.array([0.1]))
    np.testing.assert_array_equal(with_boxes.poses, result.poses)
    np.testing.assert_array_equal(with_boxes.scores, result.scores)
    # Letterbox: the 100-wide image fills the 64-wide input; rows above and below are padding.
    assert result.inputs[0, 32, 32, 0] == 200 and result.inputs[0, 0, 32, 0] == 0
    with pytest.raises(ValueError, match="bottom-up"):
        BottomUpRunner(InputCentre(stride=4, input_size=(8, 8)), lambda x: x, input_size=(8, 8))


def test_render_map_draws_each_kind_as_its_spec_says():
    from posejax.inference.draw import colourise, label_colours, render_map

    labels = np.array([[0, 3], [27, 5]])
    # One colour per class of the spec, whatever the classes present in this map.
    np.testing.assert_array_equal(
        render_map(labels, DisplayMap.labels(28)), label_colours(28)[labels]
    )
    intensity = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    np.testing.assert_array_equal(
        render_map(intensity, DisplayMap.intensity()), colourise(intensity)
    )
    rgb = render_map(np.full((2, 2, 3), 2.0), DisplayMap.rgb())
    assert rgb.dtype == np.uint8 and (rgb == 255).all()


def test_detector_boxes_feed_the_top_down_runner_and_predict_draws_them(run_dirs, tmp_path):
    from posejax.inference.detection import DetectThenEstimate, load_detector
    from posejax.inference.runners import load_runner

    detector_run = run_dirs("detector")
    image = cv2.imread(str(PHOTO))[..., ::-1].copy()
    # Untrained: every centre probability is near the 0.1 prior, so threshold 0 keeps the
    # max_detections highest local maxima and 0.5 keeps none.
    detector = load_detector(detector_run, score_threshold=0.0, expand=1.5)
    boxes, scores = detector(image)
    assert 1 <= len(boxes) <= 20 and boxes.shape == (len(scores), 4)
    assert np.all(np.diff(scores) <= 0)  # best first
    assert len(load_detector(detector_run, score_threshold=0.5)(image)[0]) == 0
    plain, _ = load_detector(detector_run, score_threshold=0.0, expand=1.0)(image)
    np.testing.assert_allclose(boxes[:, 2:], 1.5 * plain[:, 2:], rtol=1e-6)
    np.testing.assert_allclose(
        boxes[:, :2] + boxes[:, 2:] / 2, plain[:, :2] + plain[:, 2:] / 2, atol=1e-6
    )

    pose_runner, _, _ = load_runner(run_dirs("heatmap"))
    system = DetectThenEstimate(pose_runner, detector)
    result = system(image)
    assert len(result.poses) == len(boxes) and result.timing["detection"] > 0
    np.testing.assert_allclose(result.boxes, boxes)
    np.testing.assert_allclose(result.box_scores, scores)
    alone = pose_runner(image, boxes)  # the pose scores, times the box scores
    np.testing.assert_allclose(result.scores, alone.scores * scores, rtol=1e-5)
    given = system(image, boxes[:2])  # boxes given: no detection
    assert len(given.poses) == 2 and given.timing["detection"] == 0.0

    with pytest.raises(ValueError, match="predict person boxes"):
        load_detector(run_dirs("heatmap"))
    with pytest.raises(ValueError, match="bottom-up"):
        DetectThenEstimate(load_runner(detector_run)[0], detector)

    out = tmp_path / "out"
    args = [str(run_dirs("heatmap")), str(PHOTO), "--out", str(out)]
    assert main([*args, "--detector", str(detector_run), "--det-score-threshold", "0"]) == 0
    assert len(read_results(out)) == len(boxes)
    assert (out / f"{PHOTO.stem}.png").exists()


def test_evaluate_with_a_detector_scores_every_detected_person(run_dirs, tmp_path):
    from posejax.evaluate import main as evaluate_main

    out = tmp_path / "row"
    metrics = evaluate_main(
        [str(run_dirs("heatmap")), "--detector", str(run_dirs("detector"))]
        + ["--det-score-threshold", "0", "--num-images", "3", "--out", str(out)]
    )
    assert 0.0 <= metrics["OKS_AP"] <= 1.0 and metrics["ms_per_image"] > 0
    assert metrics["det_score_threshold"] == 0.0 and metrics["num_images"] == 3
    assert metrics["people_found_ratio"] > 0
    row = json.loads((out / "final_metrics.json").read_text())
    assert row["OKS_AP"] == metrics["OKS_AP"] and "detector_train_minutes" in row
    with pytest.raises(SystemExit):
        evaluate_main([str(run_dirs("heatmap")), "--detector", "x", "--oracle"])
