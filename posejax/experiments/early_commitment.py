"""E7: early commitment. Top-down with a detector vs bottom-up, against how crowded people are.

``python -m posejax.experiments.early_commitment --top-down RUN --detector DET_RUN
--bottom-up RUN --out DIR [--split validation] [--num-images 300]``

Every image of the split prefix goes through three systems, built from the runs' newest
checkpoints with the inference runners:

* ``top-down + detector``: the person detector's boxes (score >= ``--det-score-threshold``)
  cropped for the top-down pose network (:class:`posejax.inference.detection.DetectThenEstimate`);
* ``top-down, GT boxes``: the same pose network on the ground-truth boxes, the ceiling of a
  perfect detector;
* ``bottom-up``: the bottom-up formulation on the whole image.

People are binned two ways: by **overlap**, the largest box IoU between a person and any other
person of the image, and by **people per image**. In each bin, pycocotools' OKS AP and AR50 are
computed for each system with the people outside the bin marked ``iscrowd`` (COCOeval then
ignores detections matched to them, as it does for people outside an area range; unmatched
detections count in every bin), and the detector's **recall**: the fraction of the bin's people
whose box a detected box overlaps with IoU >= 0.5 (one detection per person, best score first).
A top-down system cannot recover a person its detector missed; the recall column says how many
that is. Writes ``summary.csv``, ``summary.md`` and ``plot.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from posejax.data.coco_export import split_to_coco
from posejax.data.splits import open_split
from posejax.evaluation.coco_metrics import coco_keypoint_ap, predictions_to_coco_results
from posejax.evaluation.evaluator import ImagePrefix
from posejax.experiments.common import command_line, metric_row
from posejax.experiments.summarize import save_figure, write_table
from posejax.inference.detection import DetectThenEstimate, load_detector
from posejax.inference.runners import load_runner

OVERLAP_BINS: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 1.01))
PEOPLE_BINS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6))
METRICS = ("people", "OKS_AP", "OKS_AR50", "detector_recall")
TOP_DOWN_DETECTED = "top-down + detector"
TOP_DOWN_GT = "top-down, GT boxes"
BOTTOM_UP = "bottom-up"


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every ``(x, y, w, h)`` box of ``a (N, 4)`` with every box of ``b (M, 4)``."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[:, None, 2] * a[:, None, 3]) + (b[None, :, 2] * b[None, :, 3]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def crowding(gt: dict) -> dict[int, dict[str, float]]:
    """Per annotation id: ``overlap`` (largest box IoU with another person of its image) and
    ``people`` (non-crowd people in its image)."""
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image.setdefault(ann["image_id"], []).append(ann)
    out = {}
    for anns in by_image.values():
        iou = box_iou_matrix([a["bbox"] for a in anns], [a["bbox"] for a in anns])
        np.fill_diagonal(iou, 0.0)
        for i, ann in enumerate(anns):
            out[ann["id"]] = {"overlap": float(iou[i].max(initial=0.0)), "people": len(anns)}
    return out


def matched_people(gt_boxes: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Bool per ground-truth box: matched by a detection with IoU >= 0.5 (greedy by score)."""
    matched = np.zeros(len(gt_boxes), bool)
    if not len(gt_boxes) or not len(boxes):
        return matched
    iou = box_iou_matrix(boxes, gt_boxes)
    for d in np.argsort(-np.asarray(scores), kind="stable"):
        candidates = np.where(~matched & (iou[d] >= 0.5), iou[d], -1.0)
        if candidates.max() >= 0.5:
            matched[int(candidates.argmax())] = True
    return matched


def run_systems(top_down_run, detector_run, bottom_up_run, source, *, det_score_threshold):
    """``(gt, results per system, detector hit per annotation id)`` on every image of
    ``source``."""
    pose_runner, _, _ = load_runner(top_down_run)
    detector = load_detector(detector_run, score_threshold=det_score_threshold)
    detected = DetectThenEstimate(pose_runner, detector)
    bottom_up, _, _ = load_runner(bottom_up_run)
    for runner in (detected, bottom_up):
        runner.warmup()
    gt = split_to_coco(source)
    anns_of: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0):
            anns_of.setdefault(ann["image_id"], []).append(ann)
    found = {TOP_DOWN_DETECTED: [], TOP_DOWN_GT: [], BOTTOM_UP: []}
    hit: dict[int, bool] = {}
    ids = []
    for i in tqdm(range(len(source)), desc="E7 images", unit="image", leave=False):
        example = source[i]
        image, image_id = np.asarray(example["image"]), int(example["image_id"])
        ids.append(image_id)
        anns = anns_of.get(image_id, [])
        gt_boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        with_detector = detected(image)
        hits = matched_people(gt_boxes, with_detector.boxes, with_detector.box_scores)
        for ann, ok in zip(anns, hits, strict=True):
            hit[ann["id"]] = bool(ok)
        on_gt = pose_runner(image, gt_boxes)
        whole = bottom_up(image)
        for name, result in (
            (TOP_DOWN_DETECTED, with_detector),
            (TOP_DOWN_GT, on_gt),
            (BOTTOM_UP, whole),
        ):
            found[name].append((result.poses, result.scores))
    results = {
        name: predictions_to_coco_results(ids, [p for p, _ in rows], [s for _, s in rows])
        for name, rows in found.items()
    }
    return gt, results, hit


def binned_rows(gt, results, hit, crowd) -> list[dict]:
    """One row per (system, binning, bin): AP, AR50, people in the bin, detector recall."""
    rows = []
    binnings = {
        "overlap": [(f"{lo:.1f}-{min(hi, 1.0):.1f}", lo, hi) for lo, hi in OVERLAP_BINS],
        "people": [(f"{lo}-{hi}", lo, hi + 1) for lo, hi in PEOPLE_BINS],
    }
    for axis, bins in binnings.items():
        for label, lo, hi in bins:
            inside = {
                a["id"]
                for a in gt["annotations"]
                if a["id"] in crowd and lo <= crowd[a["id"]][axis] < hi
            }
            scored = [a for a in gt["annotations"] if a["id"] in inside and a["num_keypoints"] > 0]
            if not scored:
                continue
            binned = copy.deepcopy(gt)
            for ann in binned["annotations"]:
                if ann["id"] not in inside:
                    ann["iscrowd"] = 1
            recall = float(np.mean([hit[a["id"]] for a in scored]))
            for name, system_results in results.items():
                stats = coco_keypoint_ap(binned, system_results)
                metrics = {
                    "people": float(len(scored)),
                    "OKS_AP": stats["AP"],
                    "OKS_AR50": stats["AR50"],
                    "detector_recall": recall if name == TOP_DOWN_DETECTED else float("nan"),
                }
                rows.append(metric_row(name, {"axis": axis, "bin": label}, metrics))
    return rows


def plot_bins(rows: Sequence[dict], out_path: str | Path) -> Path:
    """AP and AR50 per bin for each system, and the detector's recall, one panel per binning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = list(dict.fromkeys(r["overrides"]["axis"] for r in rows))
    fig, axes = plt.subplots(1, len(axes_names), figsize=(4.6 * len(axes_names), 3.6), dpi=120)
    axes = np.atleast_1d(axes)
    xlabels = {"overlap": "largest box IoU with another person", "people": "people per image"}
    for ax, axis in zip(axes, axes_names, strict=True):
        mine = [r for r in rows if r["overrides"]["axis"] == axis]
        bins = list(dict.fromkeys(r["overrides"]["bin"] for r in mine))
        x = np.arange(len(bins))
        value = {(r["run"], r["overrides"]["bin"]): r["metrics"] for r in mine}
        for i, name in enumerate(dict.fromkeys(r["run"] for r in mine)):
            ap = [value[name, b]["OKS_AP"] for b in bins]
            ar = [value[name, b]["OKS_AR50"] for b in bins]
            ax.plot(x, ap, marker="o", color=f"C{i}", label=f"{name}: OKS AP")
            ax.plot(x, ar, ":", marker=".", color=f"C{i}", label=f"{name}: OKS AR50")
        recall = [value[TOP_DOWN_DETECTED, b]["detector_recall"] for b in bins]
        ax.plot(x, recall, "k--", marker="s", ms=3, label="detector recall (IoU 0.5)")
        ax.set_xticks(x, bins)
        ax.set_xlabel(xlabels.get(axis, axis))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("OKS AP, AR50 / detector recall")
    axes[0].legend(fontsize=7)
    fig.suptitle("E7: early commitment (top-down with a detector vs bottom-up)", fontsize=10)
    return save_figure(fig, out_path)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-down", required=True, help="run dir of a top-down formulation")
    parser.add_argument("--detector", required=True, help="run dir of the person detector")
    parser.add_argument("--bottom-up", required=True, help="run dir of a bottom-up formulation")
    parser.add_argument("--out", required=True, help="folder for summary.csv/md and plot.png")
    parser.add_argument("--split", default=None, help="default: the top-down run's eval split")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument(
        "--det-score-threshold", type=float, default=None, help="default: the detector run's"
    )
    parser.add_argument("--title", default="E7: early commitment")
    args = parser.parse_args(argv)

    from posejax.runs.directory import run_setup

    setup = run_setup(args.top_down)
    split = args.split or setup.data.eval_split
    source = ImagePrefix(open_split(setup.data, split), args.num_images)
    gt, results, hit = run_systems(
        args.top_down,
        args.detector,
        args.bottom_up,
        source,
        det_score_threshold=args.det_score_threshold,
    )
    rows = binned_rows(gt, results, hit, crowding(gt))
    _, md_path = write_table(
        rows,
        args.out,
        metrics=METRICS,
        source=f"{args.top_down} + {args.detector} (top-down), {args.bottom_up} (bottom-up); "
        f"{split}, first {len(source)} images",
        command=command_line("posejax.experiments.early_commitment", argv),
        title=args.title,
    )
    plot_bins(rows, Path(args.out) / "plot.png")
    print(md_path.read_text())
    return rows


if __name__ == "__main__":
    main()
