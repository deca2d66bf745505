"""``python -m posejax.experiments.error_analysis RUN_DIR``: where a run's OKS AP goes.

OKS AP mixes several kinds of mistakes. This tool splits them, in the spirit of Ronchi & Perona,
"Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation" (ICCV 2017), with this
project's own code and thresholds:

* every prediction is matched to one ground-truth person of its image (greedily by OKS, best
  person score first, as COCOeval does);
* each labelled keypoint of a matched pair gets its keypoint similarity
  ``ks = exp(-d^2 / (2 area (2 kappa)^2))`` and a class: **good** (``ks >= 0.85``), **jitter**
  (``0.5 <= ks < 0.85``: right joint, imprecise), **inversion** (``ks < 0.5`` but ``>= 0.5`` to
  the same person's left/right counterpart), **swap** (``ks < 0.5`` but ``>= 0.5`` to the same
  joint of another person of the image), **miss** (anything else);
* "what-if" APs through pycocotools: the predicted scores replaced by the true OKS of each
  prediction (how much ranking costs), every jitter corrected (how much precision costs), each
  joint group set to ground truth (which joints cost the most), and the OKS constants doubled.

Diagnose on a split the result tables do not report (``--split test`` is the default), so that
decisions taken from the analysis do not tune on the validation numbers.

Writes ``error_analysis_<split>.json`` and a markdown table (``error_analysis_<split>.md``)
into ``--out`` (default: the run directory).
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posejax import skeleton
from posejax.evaluation.coco_metrics import coco_keypoint_ap

GOOD_KS = 0.85
JITTER_KS = 0.5
ERROR_CLASSES = ("good", "jitter", "inversion", "swap", "miss")
JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "face": (0, 1, 2, 3, 4),
    "shoulders+hips": (5, 6, 11, 12),
    "elbows+wrists": (7, 8, 9, 10),
    "knees+ankles": (13, 14, 15, 16),
}


def keypoint_similarity(pred: np.ndarray, gt: np.ndarray, area: float) -> np.ndarray:
    """``(..., K, 2)`` predictions vs ``(K, 2)`` ground truth -> ``(..., K)`` COCO ks."""
    var = (2 * skeleton.COCO_SIGMAS) ** 2
    d2 = ((np.asarray(pred)[..., :2] - np.asarray(gt)[:, :2]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * var * max(float(area), 1.0)))


def _gt_by_image(gt: dict) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in gt["images"]}
    for ann in gt["annotations"]:
        if not ann.get("iscrowd", 0) and ann.get("num_keypoints", 1) > 0:
            by_image.setdefault(ann["image_id"], []).append(ann)
    return by_image


def match_predictions(results: Sequence[dict], gt: dict) -> list[tuple[int, dict | None, float]]:
    """``(result index, matched annotation or None, OKS)`` for every result, greedy by score."""
    by_image = _gt_by_image(gt)
    order = sorted(range(len(results)), key=lambda i: -results[i]["score"])
    taken: set[int] = set()
    matches = []
    for i in order:
        res = results[i]
        pred = np.asarray(res["keypoints"], np.float64).reshape(-1, 3)
        best, best_oks = None, 0.0
        for ann in by_image.get(res["image_id"], []):
            if ann["id"] in taken:
                continue
            kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
            labelled = kps[:, 2] > 0
            oks = float(keypoint_similarity(pred, kps, ann["area"])[labelled].mean())
            if oks > best_oks:
                best, best_oks = ann, oks
        if best is not None:
            taken.add(best["id"])
        matches.append((i, best, best_oks))
    return matches


def classify_keypoints(results: Sequence[dict], gt: dict, matches) -> dict[str, np.ndarray]:
    """Per-joint counts of each error class over matched, labelled keypoints.

    Returns ``{class: (K,) counts}`` plus ``"median_error_sqrt_area"``: per joint, the median
    distance to the ground truth divided by ``sqrt(area)`` (scale-free localisation error).
    """
    k = skeleton.NUM_KEYPOINTS
    counts = {c: np.zeros(k, np.int64) for c in ERROR_CLASSES}
    flip = skeleton.COCO_FLIP_PERMUTATION
    by_image = _gt_by_image(gt)
    errors: list[list[float]] = [[] for _ in range(k)]
    for i, ann, _ in matches:
        if ann is None:
            continue
        pred = np.asarray(results[i]["keypoints"], np.float64).reshape(-1, 3)
        kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        labelled = kps[:, 2] > 0
        ks = keypoint_similarity(pred, kps, ann["area"])
        ks_flip = keypoint_similarity(pred[flip], kps, ann["area"])[flip]
        ks_other = np.zeros(k)
        for other in by_image.get(results[i]["image_id"], []):
            if other["id"] == ann["id"]:
                continue
            okps = np.asarray(other["keypoints"], np.float64).reshape(-1, 3)
            sim = keypoint_similarity(pred, okps, other["area"])
            ks_other = np.maximum(ks_other, np.where(okps[:, 2] > 0, sim, 0.0))
        dist = np.hypot(*(pred[:, :2] - kps[:, :2]).T) / np.sqrt(max(ann["area"], 1.0))
        for j in np.flatnonzero(labelled):
            errors[j].append(float(dist[j]))
            if ks[j] >= GOOD_KS:
                counts["good"][j] += 1
            elif ks[j] >= JITTER_KS:
                counts["jitter"][j] += 1
            elif kps[flip[j], 2] > 0 and ks_flip[j] >= JITTER_KS:
                counts["inversion"][j] += 1
            elif ks_other[j] >= JITTER_KS:
                counts["swap"][j] += 1
            else:
                counts["miss"][j] += 1
    counts["median_error_sqrt_area"] = np.array([np.median(e) if e else np.nan for e in errors])
    return counts


def _with_keypoints(results, matches, replace) -> list[dict]:
    """A copy of ``results`` where ``replace(pred (K, 3), gt (K, 3), area) -> (K, 3)`` has
    rewritten every matched prediction."""
    out = copy.deepcopy(list(results))
    for i, ann, _ in matches:
        if ann is None:
            continue
        pred = np.asarray(out[i]["keypoints"], np.float64).reshape(-1, 3)
        kps = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        out[i]["keypoints"] = [float(v) for v in replace(pred, kps, ann["area"]).reshape(-1)]
    return out


def what_if_ap(results: Sequence[dict], gt: dict, matches) -> dict[str, float]:
    """COCO AP of the results as they are and after each single correction."""
    ids = [img["id"] for img in gt["images"]]
    table = {"as predicted": coco_keypoint_ap(gt, results, image_ids=ids)["AP"]}
    rescored = copy.deepcopy(list(results))
    for i, _, oks in matches:
        rescored[i]["score"] = float(oks)
    table["scores = true OKS"] = coco_keypoint_ap(gt, rescored, image_ids=ids)["AP"]

    def fix_jitter(pred, kps, area):
        ks = keypoint_similarity(pred, kps, area)
        jitter = (kps[:, 2] > 0) & (ks >= JITTER_KS) & (ks < GOOD_KS)
        pred = pred.copy()
        pred[jitter, :2] = kps[jitter, :2]
        return pred

    table["jitter corrected"] = coco_keypoint_ap(
        gt, _with_keypoints(results, matches, fix_jitter), image_ids=ids
    )["AP"]
    for name, joints in JOINT_GROUPS.items():

        def set_group(pred, kps, area, joints=joints):
            pred = pred.copy()
            pred[list(joints), :2] = kps[list(joints), :2]
            return pred

        table[f"{name} = ground truth"] = coco_keypoint_ap(
            gt, _with_keypoints(results, matches, set_group), image_ids=ids
        )["AP"]
    table["OKS constants x2"] = coco_keypoint_ap(
        gt, results, image_ids=ids, sigmas=2 * skeleton.COCO_SIGMAS
    )["AP"]
    return table


def analyse(results: Sequence[dict], gt: dict) -> dict:
    """The whole analysis as a JSON-serialisable dict."""
    matches = match_predictions(results, gt)
    counts = classify_keypoints(results, gt, matches)
    total = sum(counts[c] for c in ERROR_CLASSES)
    share = {c: float(counts[c].sum() / max(total.sum(), 1)) for c in ERROR_CLASSES}
    per_joint = {
        name: {
            **{c: float(counts[c][j] / max(total[j], 1)) for c in ERROR_CLASSES},
            "median_error_sqrt_area": float(counts["median_error_sqrt_area"][j]),
        }
        for j, name in enumerate(skeleton.COCO_KEYPOINTS)
    }
    return {
        "what_if_AP": what_if_ap(results, gt, matches),
        "keypoint_error_share": share,
        "per_joint": per_joint,
        "matched_predictions": sum(1 for _, a, _ in matches if a is not None),
        "predictions": len(results),
        "ground_truth_people": sum(len(v) for v in _gt_by_image(gt).values()),
    }


def to_markdown(report: dict, title: str) -> str:
    lines = [f"# {title}", "", "| what if | OKS AP |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in report["what_if_AP"].items()]
    lines += ["", "| joint | " + " | ".join(ERROR_CLASSES) + " | median err / sqrt(area) |"]
    lines += ["|---|" + "---:|" * (len(ERROR_CLASSES) + 1)]
    share = report["keypoint_error_share"]
    lines.append("| **all** | " + " | ".join(f"{share[c]:.2f}" for c in ERROR_CLASSES) + " | |")
    for name, row in report["per_joint"].items():
        cells = " | ".join(f"{row[c]:.2f}" for c in ERROR_CLASSES)
        lines.append(f"| {name} | {cells} | {row['median_error_sqrt_area']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--split", default="test", help="split to diagnose (default: test)")
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--out", default=None, help="output folder (default: the run dir)")
    args = parser.parse_args(argv)

    import jax

    from posejax.data.splits import open_split
    from posejax.evaluation.evaluator import evaluate
    from posejax.experiments.common import restore_predict

    setup, predict, step = restore_predict(args.run_dir)
    result = evaluate(
        predict,
        setup.formulation,
        open_split(setup.data, args.split),
        setup.data.eval_pipeline,
        num_images=args.num_images,
        encode=jax.jit(setup.formulation.encode),
    )
    report = analyse(result.results, result.gt)
    report.update({"split": args.split, "num_images": args.num_images, "step": int(step)})
    out = Path(args.out or args.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"error_analysis_{args.split}.json").write_text(json.dumps(report, indent=2))
    title = f"Error analysis of {Path(args.run_dir).name} (step {step}, {args.split} split)"
    text = to_markdown(report, title)
    (out / f"error_analysis_{args.split}.md").write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
