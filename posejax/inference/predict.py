"""``python -m posejax.predict RUN_DIR IMAGES...`` / ``posejax-predict``: poses on your images.

Loads the newest checkpoint of a run directory, runs it on one image, several, or every image of
a folder, and writes into ``--out``:

* ``<name>.png``: the image with one skeleton per person;
* ``<name>_<map>.png`` (``--overlays``): the network inputs (crops or the letterboxed image)
  with each of the formulation's display maps (heatmaps, PAF magnitude, part labels, ...)
  resized over them: what the formulation saw and said;
* ``predictions.json``: every person in the COCO keypoint results format (original pixels).

Which people a single-person (top-down) formulation looks at is chosen by the options:
``--detector DET_RUN`` (a trained person-detector run, ``formulation=detector``: its boxes with a
score of at least ``--det-score-threshold``, drawn on the picture; detection runs on every image,
so any photo works), ``--detections`` (a COCO detection-results JSON, boxes with a score of at
least ``--det-score-threshold``), ``--gt`` (the non-crowd person boxes of a COCO ground-truth
JSON), or, by default, the whole image as one person's box (it gets the training margin around
it, so a photo cropped around one person looks like a training crop). A multi-person (bottom-up)
formulation always reads the whole image, letterboxed; boxes are not used. Both runners are
called the same way, with the boxes (:mod:`posejax.inference.runners`); which one runs follows
``formulation.input_mode``.

Image ids (for the JSON and for matching boxes) are the ids that ``--gt`` gives the file names;
otherwise the digits of the file name (``000000000785.jpg`` -> 785), as the dataset builders do.
Images are read like the datasets read them: RGB, EXIF orientation *not* applied, so coordinates
refer to the stored pixel grid that COCO annotations use.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m posejax.predict",
        description=(
            "Run a trained posejax model on images: a PNG with skeletons per image, optional "
            "overlays of the formulation's maps, and the COCO keypoint results JSON."
        ),
        epilog=(
            "People: a top-down (single-person) formulation takes its boxes from --detector (a "
            "trained detector run) or --detections (scores >= --det-score-threshold), else from "
            "--gt, else treats the whole image as one person. A bottom-up formulation reads the "
            "whole image and ignores boxes."
        ),
    )
    parser.add_argument("run_dir", help="a posejax run directory (config.json + checkpoints/)")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/predict)")
    parser.add_argument(
        "--detector",
        default=None,
        metavar="DET_RUN",
        help="a trained person-detector run directory (formulation=detector): detect the "
        "people of every image, boxes with a score >= --det-score-threshold",
    )
    parser.add_argument(
        "--box-expand",
        type=float,
        default=1.0,
        help="scale detector boxes about their centre by this factor (default 1)",
    )
    parser.add_argument(
        "--detections",
        default=None,
        help="COCO detection-results JSON ([{image_id, bbox, score, category_id}]): person "
        "boxes for top-down formulations",
    )
    parser.add_argument(
        "--det-score-threshold",
        type=float,
        default=None,
        help="keep detections with at least this score (default 0.5; with --detector the "
        "detector run's person_threshold, 0.2 by default)",
    )
    parser.add_argument(
        "--gt",
        default=None,
        help="COCO ground-truth JSON: its non-crowd person boxes (when no --detections) and its "
        "file name -> image id table",
    )
    parser.add_argument(
        "--overlays", action="store_true", help="also write the formulation's maps over its inputs"
    )
    parser.add_argument(
        "--min-score",
        type=float,
        default=0.1,
        help="draw keypoints with at least this score (default 0.1)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="crops per network call (default 16)"
    )
    return parser


def collect_images(inputs: Sequence[str]) -> list[Path]:
    """Image files named or found (non-recursively, sorted) in the named folders."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither an image file nor a folder")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {list(inputs)}")
    return found


def read_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` RGB uint8, EXIF orientation ignored (the pixel grid annotations refer to)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise OSError(f"cannot read image {path}")
    return np.ascontiguousarray(image[..., ::-1])


def _load_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class BoxSource:
    """Person boxes per image id, from detections or ground truth (or none: whole image)."""

    def __init__(
        self,
        *,
        detections: str | None = None,
        gt: str | None = None,
        det_score_threshold: float = 0.5,
    ):
        from posejax.data._builder_utils import image_id_from_name

        self._id_from_name = image_id_from_name
        self.ids_by_name: dict[str, int] = {}
        self.boxes: dict[int, list[list[float]]] | None = None
        self.scores: dict[int, list[float]] | None = None
        self.kind = "whole image"
        ground_truth = _load_json(gt) if gt else None
        if ground_truth is not None:
            self.ids_by_name = {
                Path(img["file_name"]).name: int(img["id"]) for img in ground_truth["images"]
            }
        if detections:
            self.kind = f"detections (score >= {det_score_threshold})"
            self.boxes, self.scores = defaultdict(list), defaultdict(list)
            for det in _load_json(detections):
                if det.get("category_id", 1) != 1 or det["score"] < det_score_threshold:
                    continue
                self.boxes[int(det["image_id"])].append(list(det["bbox"]))
                self.scores[int(det["image_id"])].append(float(det["score"]))
        elif ground_truth is not None:
            self.kind = "ground-truth boxes"
            self.boxes = defaultdict(list)
            for ann in ground_truth["annotations"]:
                if ann.get("category_id", 1) == 1 and not ann.get("iscrowd", 0):
                    self.boxes[int(ann["image_id"])].append(list(ann["bbox"]))

    def image_id(self, path: Path) -> int:
        if path.name in self.ids_by_name:
            return self.ids_by_name[path.name]
        return self._id_from_name(path.name)

    def __call__(self, image_id: int, image_hw: tuple[int, int]):
        """``(boxes (P, 4), scores (P,) or None)`` for one image."""
        if self.boxes is None:
            height, width = image_hw
            # The whole pixel grid: centres 0..W-1 span [-0.5, W - 0.5].
            return np.array([[-0.5, -0.5, width, height]], np.float64), None
        boxes = np.asarray(self.boxes.get(image_id, []), np.float64).reshape(-1, 4)
        if self.scores is None:
            return boxes, None
        return boxes, np.asarray(self.scores.get(image_id, []), np.float64)


def _line_width(image: np.ndarray) -> int:
    return max(1, round(max(image.shape[:2]) / 320))


def overlay_panels(result, min_score: float) -> dict[str, np.ndarray]:
    """``map name -> grid`` of the network inputs with that map over them and the poses drawn.

    Inputs are enlarged by an integer factor to at least 256 px on the short side (nearest
    neighbour, :func:`posejax.inference.draw.enlarge`), so that small crops stay readable.
    """
    from posejax.geometry import apply_affine
    from posejax.inference.draw import draw_poses, enlarge, grid, overlay, render_map, scale_poses

    enlarged = [enlarge(im) for im in result.inputs]
    poses_in_input = []
    for index, (_, factor) in enumerate(enlarged):
        people = result.poses[result.person_input == index].copy()
        found = people[..., 2:] > 0
        people[..., :2] = np.where(
            found, apply_affine(people[..., :2], result.transforms[index]), 0.0
        )
        poses_in_input.append(scale_poses(people, factor))
    pictures = {}
    for name, maps in result.maps.items():
        panels = []
        for index, value in enumerate(maps):
            panel = overlay(enlarged[index][0], render_map(value, result.map_specs[name]))
            panels.append(draw_poses(panel, poses_in_input[index], min_score=min_score))
        pictures[name] = grid(panels, columns=min(len(panels), 4))
    return pictures


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)

    from posejax.evaluation.coco_metrics import predictions_to_coco_results, write_results
    from posejax.inference.detection import DetectThenEstimate, load_detector
    from posejax.inference.draw import draw_boxes, draw_poses, save_png
    from posejax.inference.runners import STAGES, load_runner

    if args.detector and args.detections:
        raise SystemExit("posejax.predict: give --detector or --detections, not both")
    images = collect_images(args.inputs)
    runner, setup, step = load_runner(args.run_dir, batch_size=args.batch_size)
    threshold = args.det_score_threshold
    boxes_for = BoxSource(
        detections=args.detections,
        gt=args.gt,
        det_score_threshold=0.5 if threshold is None else threshold,
    )
    if not runner.uses_boxes and (args.detections or args.gt or args.detector):
        log.warning("bottom-up formulation: --detector/--detections/--gt boxes are not used")
    detecting = bool(args.detector) and runner.uses_boxes
    if detecting:
        detector = load_detector(args.detector, score_threshold=threshold, expand=args.box_expand)
        runner = DetectThenEstimate(runner, detector)
        boxes_for.kind = f"detector {args.detector} (score >= {detector.score_threshold})"
    out_dir = Path(args.out) if args.out else Path(args.run_dir) / "predict"
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "%s (step %d, %s) on %d image(s); people: %s",
        type(setup.formulation).__name__,
        step,
        setup.formulation.input_mode,
        len(images),
        boxes_for.kind if runner.uses_boxes else "whole image, bottom-up",
    )

    results: list[dict] = []
    totals = dict.fromkeys(STAGES, 0.0)
    used_names: set[str] = set()
    for path in images:
        image = read_rgb(path)
        image_id = boxes_for.image_id(path)
        if detecting:
            boxes, box_scores = None, None  # the detector finds them
        else:  # unused by a bottom-up runner
            boxes, box_scores = boxes_for(image_id, image.shape[:2])
        result = runner(image, boxes, box_scores, keep_maps=args.overlays)
        for stage, seconds in result.timing.items():
            totals[stage] = totals.get(stage, 0.0) + seconds
        results += predictions_to_coco_results([image_id], [result.poses], [result.scores])

        name = path.stem
        suffix = 1
        while name in used_names:  # same file name in two folders
            suffix += 1
            name = f"{path.stem}_{suffix}"
        used_names.add(name)
        picture = image
        if detecting:
            picture = draw_boxes(
                picture, result.boxes, result.box_scores, thickness=_line_width(image)
            )
        picture = draw_poses(
            picture, result.poses, min_score=args.min_score, thickness=_line_width(image)
        )
        save_png(out_dir / f"{name}.png", picture)
        if args.overlays:
            for map_name, panel in overlay_panels(result, args.min_score).items():
                save_png(out_dir / f"{name}_{map_name}.png", panel)
        log.info("%s: %d people (image id %d)", path.name, len(result.poses), image_id)

    write_results(results, out_dir / "predictions.json")
    per_image = ", ".join(f"{k} {1000 * v / len(images):.1f}" for k, v in totals.items())
    log.info("ms per image (first includes compilation): %s", per_image)
    log.info("wrote %d people to %s", len(results), out_dir / "predictions.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
