"""E4 on ground-truth maps: greedy vs Hungarian vs ILP grouping against the size of the crowd.

``python -m posejax.experiments.grouping --out DIR [--people 1-12] [--scenes N] [--repeats R]``

A trained network's maps mix the grouping's mistakes with the network's. This tool isolates
the grouping: scenes of exactly ``n`` people (the renderer of ``synthetic_people``, 384x384, so
that maps are 96x96 at stride 4, people 25-60 % of the image height, boxes overlapping up to the
dataset's IoU 0.3 by default, ``--max-overlap 1`` for piles) are encoded into confidence maps
and PAFs by the PAF formulation's own encoder (the
settings of ``conf/formulation/paf.yaml``) and parsed as if a network had output them, in two
conditions:

* ``clean``: the encoded targets, a perfect network;
* ``noisy``: the confidence maps encoded from keypoints jittered by ``N(0, 0.5)`` map pixels
  (candidates off their joints, so line integrals are imperfect), plus spurious peaks (per part
  and image, Poisson(2) Gaussians of height ``U(0.15, 0.6)`` at random places); PAFs exact.

Every grouping of :data:`VARIANTS` parses the same maps. Accuracy: pycocotools' OKS AP per
crowd size (people mapped back to image pixels). Time: :func:`group_people` per image, the
median of ``--repeats`` runs, mean over the scenes of a size (one process; set
``OMP_NUM_THREADS=1`` for one core). Writes ``summary.csv`` / ``summary.md`` and
``plot.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from posejax.data.coco_export import split_to_coco
from posejax.data.render import SceneConfig, render_scene
from posejax.evaluation.coco_metrics import coco_keypoint_ap, predictions_to_coco_results
from posejax.geometry import map_to_image
from posejax.parsing.paf import ParsingConfig, group_people

# Groupings compared, as ParsingConfig overrides (E4 on learned maps uses the same).
VARIANTS: dict[str, dict] = {
    "greedy": {"matcher": "greedy"},
    "optimal": {"matcher": "optimal"},
    "ilp": {"matcher": "ilp", "ilp_graph": "limbs"},
    "ilp_dense": {"matcher": "ilp", "ilp_graph": "dense"},
}
CONDITIONS = ("clean", "noisy")
IMAGE_SIZE = 384
STRIDE = 4
METRICS = (
    "OKS_AP",
    "OKS_AP50",
    "people_present",
    "people_per_image",
    "parse_ms",
    "parse_ms_max",
    "ms_vs_greedy",
)


def paf_formulation():
    """The PAF formulation of ``conf/formulation/paf.yaml`` at this tool's 384x384 images."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.load(Path(__file__).parents[2] / "conf" / "formulation" / "paf.yaml")
    return instantiate(node, stride=STRIDE, input_size=(IMAGE_SIZE, IMAGE_SIZE))


def make_scenes(
    num_people: int,
    num_scenes: int,
    seed: int,
    *,
    max_overlap: float = 0.3,
    image_size: int = IMAGE_SIZE,
    heights: tuple[float, float] = (0.25, 0.6),
) -> list[dict]:
    """``num_scenes`` rendered square scenes of exactly ``num_people`` people (fewer only where
    the renderer drops a person it could not make visible); ``max_overlap`` is the renderer's
    box-IoU rule (0.3: the dataset's "groups, not piles"; 1: people placed anywhere),
    ``heights`` the range of person heights as fractions of the image."""
    config = SceneConfig(
        image_size=(image_size, image_size),
        min_people=num_people,
        max_people=num_people,
        min_height=heights[0],
        max_height=heights[1],
        max_overlap=max_overlap,
    )
    rng = np.random.default_rng([seed, num_people])
    scenes = []
    for i in range(num_scenes):
        scene = render_scene(rng, config)
        scene["image_id"] = np.int64(num_people * 10_000 + i)
        scenes.append(scene)
    return scenes


def encode_scenes(formulation, scenes: Sequence[dict], condition: str, seed: int):
    """Per scene ``(heatmaps (H, W, K), pafs (H, W, L, 2))`` under ``condition``."""
    import jax

    encode = jax.jit(formulation.encode)
    rng = np.random.default_rng(seed)
    maps = []
    for scene in scenes:
        keypoints = np.asarray(scene["keypoints"], np.float32)[None]
        batch = {
            "keypoints": keypoints,
            "valid": np.ones(keypoints.shape[:2], bool),
            "loss_mask": np.ones((1, *scene["image"].shape[:2]), np.float32),
        }
        targets = encode(batch)
        heatmaps = np.asarray(targets["heatmaps"][0])
        pafs = np.asarray(targets["pafs"][0])
        if condition == "noisy":
            jittered = keypoints.copy()
            jittered[..., :2] += rng.normal(0.0, 0.5 * STRIDE, jittered[..., :2].shape)
            heatmaps = np.asarray(encode({**batch, "keypoints": jittered})["heatmaps"][0]).copy()
            heatmaps = _add_spurious_peaks(heatmaps, rng, formulation.sigma)
        elif condition != "clean":
            raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
        maps.append((heatmaps, pafs))
    return maps


def _add_spurious_peaks(heatmaps: np.ndarray, rng: np.random.Generator, sigma: float):
    h, w, k = heatmaps.shape
    rows, cols = np.mgrid[:h, :w]
    for part in range(k):
        for _ in range(rng.poisson(2.0)):
            x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
            blob = rng.uniform(0.15, 0.6) * np.exp(
                -((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2)
            )
            heatmaps[..., part] = np.maximum(heatmaps[..., part], blob)
    return heatmaps


def parse_scenes(maps, limbs, config: ParsingConfig, *, repeats: int):
    """Median seconds per scene, poses in image pixels, and the ILP statuses seen."""
    seconds, poses, scores, statuses = [], [], [], set()
    for heatmaps, pafs in maps:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            people, person_scores, info = group_people(
                heatmaps, pafs, limbs=limbs, config=config, return_info=True
            )
            runs.append(time.perf_counter() - start)
        seconds.append(float(np.median(runs)))
        statuses.add(info.status)
        people = people.copy()
        found = people[..., 2] > 0
        people[..., :2] = np.where(found[..., None], map_to_image(people[..., :2], STRIDE), 0.0)
        poses.append(people)
        scores.append(person_scores)
    return np.asarray(seconds), poses, scores, statuses


def compare(
    people_counts: Sequence[int],
    *,
    num_scenes: int = 16,
    repeats: int = 3,
    seed: int = 0,
    variants: dict[str, dict] = VARIANTS,
    conditions: Sequence[str] = CONDITIONS,
    max_overlap: float = 0.3,
) -> list[dict]:
    """One row per (condition, variant, crowd size)."""
    formulation = paf_formulation()
    rows = []
    for n in people_counts:
        scenes = make_scenes(n, num_scenes, seed, max_overlap=max_overlap)
        gt = split_to_coco(scenes)
        image_ids = [int(s["image_id"]) for s in scenes]
        for condition in conditions:
            maps = encode_scenes(formulation, scenes, condition, seed + n)
            group_people(*maps[0], limbs=formulation.limbs)  # warm-up: first-call costs
            greedy_ms = None
            for name, overrides in variants.items():
                config = dataclasses.replace(formulation.parsing, **overrides)
                seconds, poses, scores, statuses = parse_scenes(
                    maps, formulation.limbs, config, repeats=repeats
                )
                results = predictions_to_coco_results(image_ids, poses, scores)
                stats = coco_keypoint_ap(gt, results, image_ids=image_ids)
                ms = 1000.0 * float(seconds.mean())
                greedy_ms = ms if name == "greedy" else greedy_ms
                rows.append(
                    {
                        "run": f"{condition}/{name}/{n}",
                        "overrides": {
                            "condition": condition,
                            "grouping": name,
                            "people": n,
                            "status": ",".join(sorted(statuses)),
                        },
                        "metrics": {
                            "OKS_AP": stats["AP"],
                            "OKS_AP50": stats["AP50"],
                            "people_per_image": float(np.mean([len(p) for p in poses])),
                            "people_present": float(np.mean([len(s["keypoints"]) for s in scenes])),
                            "parse_ms": ms,
                            "parse_ms_max": 1000.0 * float(seconds.max()),
                            "ms_vs_greedy": ms / greedy_ms if greedy_ms else float("nan"),
                        },
                    }
                )
                print(
                    f"{condition:5s} {name:9s} n={n:2d}  AP {stats['AP']:.3f}  "
                    f"{ms:8.2f} ms  ({','.join(sorted(statuses))})",
                    flush=True,
                )
    return rows


def plot(rows: Sequence[dict], out_path: str | Path) -> Path:
    """AP (top) and parsing time (bottom, log scale) against people, one column per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from posejax.experiments.summarize import save_figure

    conditions = sorted({r["overrides"]["condition"] for r in rows}, key=CONDITIONS.index)
    fig, axes = plt.subplots(2, len(conditions), figsize=(5 * len(conditions), 7), squeeze=False)
    for col, condition in enumerate(conditions):
        for name in VARIANTS:
            mine = [
                r
                for r in rows
                if r["overrides"]["condition"] == condition and r["overrides"]["grouping"] == name
            ]
            if not mine:
                continue
            n = [r["overrides"]["people"] for r in mine]
            axes[0, col].plot(n, [r["metrics"]["OKS_AP"] for r in mine], marker="o", label=name)
            axes[1, col].plot(n, [r["metrics"]["parse_ms"] for r in mine], marker="o", label=name)
        axes[0, col].set_title(f"{condition} ground-truth maps (96x96)")
        axes[0, col].set_ylabel("OKS AP")
        axes[1, col].set_ylabel("parsing ms per image")
        axes[1, col].set_yscale("log")
        axes[1, col].set_xlabel("people per image")
        axes[0, col].legend()
    fig.tight_layout()
    return save_figure(fig, out_path)


def plot_missed(
    scenes: Sequence[dict], maps, poses, out_path: str | Path, *, limit: int = 4
) -> Path | None:
    """Ground-truth people that a parse of perfect maps misses (best OKS < 0.5), drawn.

    Per missed person, a crop of the scene (box x 1.6, upscaled): left, the image with the
    person's labelled keypoints (white) and the parsed people (coloured skeletons); right, the
    maximum over the confidence maps with the same people. Returns None when nothing is missed.
    """
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from posejax.experiments.error_analysis import keypoint_similarity
    from posejax.experiments.summarize import save_figure
    from posejax.inference.draw import draw_poses, overlay

    missed = []
    for scene, (heatmaps, _), people in zip(scenes, maps, poses, strict=True):
        for p, truth in enumerate(np.asarray(scene["keypoints"], np.float64)):
            labelled = truth[:, 2] > 0
            best = (
                max(
                    (keypoint_similarity(q[:, :2], truth, scene["area"][p])[labelled].mean())
                    for q in people
                )
                if len(people)
                else 0.0
            )
            if best < 0.5 and len(missed) < limit:
                missed.append((scene, heatmaps, people, p, best))
    if not missed:
        return None
    fig, axes = plt.subplots(2, len(missed), figsize=(3.2 * len(missed), 6.4), squeeze=False)
    for col, (scene, heatmaps, people, p, best) in enumerate(missed):
        truth = np.asarray(scene["keypoints"][p], np.float64)
        x, y, w, h = np.asarray(scene["boxes"][p], np.float64)
        side = 1.6 * max(w, h, 24.0)
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
        x1 = int(min(cx + side / 2, IMAGE_SIZE))
        y1 = int(min(cy + side / 2, IMAGE_SIZE))
        image = scene["image"]
        views = [image, overlay(image, heatmaps.max(axis=-1), alpha=0.6)]
        for row, view in enumerate(views):
            drawn = draw_poses(view, people, thickness=2)
            labelled = truth[truth[:, 2] > 0]
            for kx, ky, _ in labelled:
                cv2.circle(drawn, (int(round(kx)), int(round(ky))), 4, (255, 255, 255), 1)
            crop = drawn[y0:y1, x0:x1]
            scale = 256.0 / max(crop.shape[:2])
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            axes[row, col].imshow(crop)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        n_lab = int((truth[:, 2] > 0).sum())
        axes[0, col].set_title(f"{n_lab} labelled keypoints\nbest OKS {best:.2f}", fontsize=9)
    axes[0, 0].set_ylabel("image, ground truth (white), parse")
    axes[1, 0].set_ylabel("max of the confidence maps")
    fig.tight_layout()
    return save_figure(fig, out_path)


def _people_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def _draw_missed_example(num_people: int, seed: int, max_overlap: float, out: str) -> None:
    """``missed_people.png``: who greedy parsing misses on perfect maps of ``num_people``."""
    formulation = paf_formulation()
    scenes = make_scenes(num_people, 16, seed, max_overlap=max_overlap)
    maps = encode_scenes(formulation, scenes, "clean", seed + num_people)
    _, poses, _, _ = parse_scenes(maps, formulation.limbs, formulation.parsing, repeats=1)
    Path(out).mkdir(parents=True, exist_ok=True)
    plot_missed(scenes, maps, poses, Path(out) / "missed_people.png")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    from posejax.experiments.common import command_line
    from posejax.experiments.summarize import write_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--people", default="1-12", help="crowd sizes, e.g. 1-12 or 10")
    parser.add_argument("--scenes", type=int, default=16, help="scenes per crowd size")
    parser.add_argument("--repeats", type=int, default=3, help="timed parses per scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-overlap", type=float, default=0.3, help="renderer's box-IoU rule (1: none)"
    )
    parser.add_argument(
        "--missed-example",
        type=int,
        default=0,
        metavar="N",
        help="also draw the people greedy parsing misses on clean maps of N people",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    args = parser.parse_args(argv)
    rows = compare(
        _people_range(args.people),
        num_scenes=args.scenes,
        repeats=args.repeats,
        seed=args.seed,
        variants={k: VARIANTS[k] for k in args.variants},
        conditions=args.conditions,
        max_overlap=args.max_overlap,
    )
    _, md_path = write_table(
        rows,
        args.out,
        metrics=METRICS,
        source="ground-truth maps of rendered scenes",
        command=command_line("posejax.experiments.grouping", argv),
        title="E4: grouping on ground-truth maps against the crowd size",
    )
    plot(rows, Path(args.out) / "plot.png")
    if args.missed_example:
        _draw_missed_example(args.missed_example, args.seed, args.max_overlap, args.out)
    print(md_path.read_text())
    return rows


if __name__ == "__main__":
    main()
