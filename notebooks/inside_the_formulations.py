# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Inside the formulations: one image, four ways to predict a pose
#
# One synthetic validation image goes through every formulation: what its target encoder makes
# of the labels, what its network predicts, and what its decoder reads off the prediction.
#
# * **regression** (DeepPose): 17 (x, y) pairs straight from pooled features;
# * **heatmap** (Tompson et al.): one Gaussian map per joint;
# * **segmentation**: body-part classes per pixel, joints as small disc classes;
# * **PAF** (OpenPose): part maps + limb vector fields, then limb-by-limb matching.
#
# Models come from the runs of one sweep (`POSEJAX_RUNS`, by default `results/quick/runs` from
# `make compare`). A formulation without a run in that sweep is shown with an **untrained**
# network built from the same config (its targets and decoding are still exact; its predictions
# are noise), so the notebook always runs.

# %%
import dataclasses
import json
import os
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np
from omegaconf import OmegaConf

from posejax import skeleton
from posejax.data import schema
from posejax.data.pipeline import make_eval_batches
from posejax.data.splits import open_split
from posejax.evaluation.evaluator import ImagePrefix
from posejax.geometry import map_to_image
from posejax.inference.draw import draw_poses, label_colours, overlay
from posejax.inference.runners import make_runner
from posejax.parsing.matching import match_greedy, match_optimal
from posejax.parsing.paf import connection_scores, limb_sample_dots
from posejax.parsing.peaks import find_peaks
from posejax.runs.directory import restore_run
from posejax.runs.setup import build_setup
from posejax.runs.state import ModelDef, jitted_predict


def repo_root() -> Path:
    """The checkout this notebook lives in (relative default paths are taken from there)."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists():
            return folder
    return here


RUNS = Path(os.environ.get("POSEJAX_RUNS", repo_root() / "results" / "quick" / "runs"))
CONF = repo_root() / "conf"
FORMULATIONS = ("regression", "heatmap", "segmentation", "paf")

# %% [markdown]
# ## The models
#
# A run belongs to a formulation when its saved config has that formulation's `_target_`.


# %%
def formulation_node(name: str):
    return OmegaConf.load(CONF / "formulation" / f"{name}.yaml")


run_dirs = sorted(
    p.parent for p in RUNS.rglob("config.json") if (p.parent / "checkpoints").is_dir()
)
if not run_dirs:
    raise FileNotFoundError(f"no run under {RUNS}: run `make compare` or set POSEJAX_RUNS")
configs = {run: json.loads((run / "config.json").read_text()) for run in run_dirs}


def load_model(name: str):
    """``(setup, predict, description)``: the sweep's run of ``name``, or an untrained model."""
    target = formulation_node(name)["_target_"]
    for run, config in configs.items():
        if config["formulation"]["_target_"] == target:
            setup, model_def, params, step = restore_run(run)
            description = f"trained, {step} steps ({run.relative_to(RUNS)})"
            break
    else:  # same data and backbone as the sweep, this formulation's defaults, random weights
        cfg = OmegaConf.create(next(iter(configs.values())))
        cfg.formulation = formulation_node(name)
        setup = build_setup(cfg)
        model_def = ModelDef(setup.model)
        params = model_def.initial_params
        description = "untrained (no run of it in the sweep)"
    predict = jitted_predict(model_def, params)
    return setup, (lambda images: jax.device_get(predict(images))), description


models = {name: load_model(name) for name in FORMULATIONS}
for name, (setup, _, description) in models.items():
    print(f"{name:>12s}: {type(setup.formulation).__name__}, {description}")

# %% [markdown]
# ## The image
#
# The first validation image with at least two people (or the first image).

# %%
data = models["heatmap"][0].data
source = open_split(data, data.eval_split)
index = next((i for i in range(min(len(source), 64)) if len(source[i]["keypoints"]) >= 2), 0)
example = source[index]
image, people = example[schema.IMAGE], np.asarray(example[schema.KEYPOINTS])
print(f"image {index} (id {int(example['image_id'])}): {image.shape}, {len(people)} people")
plt.figure(figsize=(4, 4))
plt.imshow(draw_poses(image, people, point_colour=(0, 255, 0)))
plt.title("ground truth")
plt.axis("off")


# %%
def first_example(setup, person: int = 0) -> dict:
    """This image as one example of the formulation's eval pipeline (batch of 1).

    Top-down pipelines give one crop per person; ``person`` picks the crop.
    """
    crops = []
    for batch in make_eval_batches(ImagePrefix(source, index + 1), setup.data.eval_pipeline):
        for i in np.flatnonzero(batch["image_id"] == example["image_id"]):
            if batch["weight"][i] > 0:
                crops.append({k: v[i : i + 1] for k, v in batch.items()})
    return crops[min(person, len(crops) - 1)]


def show(panels, titles, *, size=2.6):
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size))
    for ax, panel, title in zip(np.atleast_1d(axes), panels, titles, strict=True):
        ax.imshow(panel)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()


def through(name: str, person: int = 0):
    """``(formulation, batch, targets, outputs, poses)`` of one example."""
    setup, predict, _ = models[name]
    batch = first_example(setup, person)
    formulation = setup.formulation
    targets = jax.device_get(jax.jit(formulation.encode)(batch))
    outputs = predict(batch["image"])
    poses = formulation.decode(outputs)[0].poses
    return formulation, batch, targets, outputs, poses


# %% [markdown]
# ## Regression: coordinates from pooled features
#
# The target is the 17 joint positions normalised to the crop; the head regresses them
# directly (L2 loss). Green: labelled joints; white: the regressed skeleton.

# %%
formulation, batch, targets, outputs, poses = through("regression")
crop = batch["image"][0]
truth = batch["keypoints"][0]
show(
    [crop, draw_poses(crop, truth, point_colour=(0, 255, 0)), draw_poses(crop, poses)],
    ["input crop", "target joints", f"regressed ({models['regression'][2].split(',')[0]})"],
)

# %% [markdown]
# ## Heatmaps: one Gaussian per joint
#
# Target and prediction are shown as their maximum over the 17 joint maps; the decoder takes
# each map's peak and refines it to sub-pixel precision.

# %%
formulation, batch, targets, outputs, poses = through("heatmap")
crop = batch["image"][0]
show(
    [
        overlay(crop, targets["heatmaps"][0].max(-1)),
        overlay(crop, outputs["heatmaps"][0].max(-1)),
        draw_poses(crop, poses),
    ],
    [f"target (sigma {formulation.sigma})", "predicted maps (max)", "decoded peaks"],
)
joints = ("nose", "left_wrist", "right_wrist", "left_ankle")
ids = [skeleton.COCO_KEYPOINTS.index(j) for j in joints]
show(
    [overlay(crop, outputs["heatmaps"][0][..., k], alpha=0.7) for k in ids],
    [f"predicted: {j}" for j in joints],
    size=2.2,
)

# %% [markdown]
# ## Part segmentation: a class for every body pixel
#
# Target: the body-part class of each map pixel (painted from the skeleton), with a small disc
# class on each joint; the decoder reads each joint from its disc class's probability.

# %%
formulation, batch, targets, outputs, poses = through("segmentation")
crop = batch["image"][0]
colours = label_colours(skeleton.NUM_BODY_PARTS)
target_parts = np.clip(formulation.dense_targets(targets)[0], 0, None)
predicted_parts = formulation.dense_predictions(outputs)[0]
show(
    [
        overlay(crop, colours[target_parts], alpha=0.6),
        overlay(crop, colours[predicted_parts], alpha=0.6),
        overlay(crop, formulation.display_maps(outputs)["joint_probability"][0]),
        draw_poses(crop, poses),
    ],
    ["target parts", "predicted parts", "joint-class probability", "decoded joints"],
)

# %% [markdown]
# ## Part Affinity Fields: the whole image at once
#
# Part confidence maps (like heatmaps, every person at once) and, per limb, a 2D field that
# points along the limb. Arrows: at every map cell the field of the limb with the strongest
# vector there, coloured by limb.

# %%
formulation, batch, targets, outputs, poses = through("paf")
picture = batch["image"][0]
stride = formulation.stride


def quiver(ax, pafs, *, min_norm=0.3):
    norms = np.linalg.norm(pafs, axis=-1)  # (H, W, L)
    limb = norms.argmax(-1)
    rows, cols = np.nonzero(norms.max(-1) > min_norm)
    vectors = pafs[rows, cols, limb[rows, cols]]
    xy = map_to_image(np.stack([cols, rows], -1).astype(float), stride)
    palette = [skeleton.limb_colour(a, b) for a, b in formulation.limbs]  # skip limbs too
    colours = np.asarray(palette, float)[limb[rows, cols]] / 255
    ax.quiver(
        xy[:, 0], xy[:, 1], vectors[:, 0], -vectors[:, 1], color=colours, scale=12, width=0.006
    )


fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
axes[0].imshow(overlay(picture, targets["heatmaps"][0].max(-1)))
axes[0].set_title("target part maps", fontsize=9)
axes[1].imshow(picture)
quiver(axes[1], targets["pafs"][0])
axes[1].set_title("target PAFs", fontsize=9)
axes[2].imshow(picture)
quiver(axes[2], outputs["pafs"][-1, 0])
axes[2].set_title("predicted PAFs (last stage)", fontsize=9)
axes[3].imshow(draw_poses(picture, poses))
axes[3].set_title(f"parsed: {len(poses)} people", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.tight_layout()

# %% [markdown]
# ### Candidate pairs and the matching
#
# For one limb, every (part A candidate, part B candidate) pair is scored by the line integral
# of the limb's field along the segment (Eq. 10 of Cao et al.), plus a distance prior; a pair is
# valid when most samples agree with the field. The matcher then keeps pairs that share no
# candidate: greedy by score (OpenPose) or the optimal assignment (Hungarian). Shown for the
# target maps (a perfect network) and the predicted ones.

# %%
settings = dataclasses.asdict(formulation.parsing)


def limb_pairs(heatmaps, pafs, limb):
    candidates = find_peaks(
        heatmaps,
        threshold=settings["peak_threshold"],
        subpixel=settings["subpixel"],
        max_per_part=settings["max_candidates"],
    )
    part_a, part_b = formulation.limbs[limb]
    a = candidates.xy[candidates.of_part(part_a)]
    b = candidates.xy[candidates.of_part(part_b)]
    start, end = np.repeat(a, len(b), 0), np.tile(b, (len(a), 1))
    dots = limb_sample_dots(
        pafs, np.full(len(start), limb), start, end, num_samples=settings["num_samples"]
    )
    score, valid = connection_scores(
        dots,
        np.hypot(*(end - start).T),
        map_height=heatmaps.shape[0],
        sample_threshold=settings["sample_threshold"],
        min_positive_fraction=settings["min_positive_fraction"],
        distance_prior=settings["distance_prior"],
    )
    return a, b, score.reshape(len(a), len(b)), valid.reshape(len(a), len(b))


# The limb with the most candidate pairs in the target maps.
limb = int(
    np.argmax(
        [
            np.prod([len(x) for x in limb_pairs(targets["heatmaps"][0], targets["pafs"][0], i)[:2]])
            for i in range(len(formulation.limbs))
        ]
    )
)
names = [skeleton.COCO_KEYPOINTS[k] for k in formulation.limbs[limb]]
print(f"limb {limb}: {names[0]} -> {names[1]}")

fig, axes = plt.subplots(2, 2, figsize=(8, 7))
sources = {
    "target maps": (targets["heatmaps"][0], targets["pafs"][0]),
    "predicted maps": (outputs["heatmaps"][-1, 0], outputs["pafs"][-1, 0]),
}
for (label, (heatmaps, pafs)), (image_ax, matrix_ax) in zip(sources.items(), axes, strict=True):
    a, b, score, valid = limb_pairs(heatmaps, pafs, limb)
    image_ax.imshow(picture)
    image_ax.set_title(f"{label}: {len(a)} x {len(b)} candidates", fontsize=9)
    image_ax.axis("off")
    if not (len(a) and len(b)):
        matrix_ax.set_axis_off()
        matrix_ax.text(0.5, 0.5, "no candidate pair", ha="center")
        continue
    greedy, optimal = match_greedy(score, valid), match_optimal(score, valid)
    pa, pb = map_to_image(a, stride), map_to_image(b, stride)
    for i in range(len(a)):
        for j in range(len(b)):
            if valid[i, j]:
                image_ax.plot(*np.stack([pa[i], pb[j]]).T, color="w", lw=0.6, alpha=0.6)
    for i, j in zip(*greedy, strict=True):
        image_ax.plot(*np.stack([pa[i], pb[j]]).T, color="C1", lw=2.5)
    image_ax.scatter(*pa.T, c="C0", s=14)
    image_ax.scatter(*pb.T, c="C3", s=14)
    shown = np.where(valid, score, np.nan)
    matrix_ax.imshow(shown, cmap="viridis")
    for i, j in zip(*greedy, strict=True):
        matrix_ax.scatter(j, i, marker="s", s=160, facecolors="none", edgecolors="C1", lw=2)
    for i, j in zip(*optimal, strict=True):
        matrix_ax.scatter(j, i, marker="o", s=50, facecolors="none", edgecolors="w", lw=1.5)
    matrix_ax.set_xlabel(f"{names[1]} candidates")
    matrix_ax.set_ylabel(f"{names[0]} candidates")
    matrix_ax.set_title("valid pair scores; orange: greedy, white: optimal", fontsize=9)
fig.tight_layout()

# %% [markdown]
# ## The four predictions on the original image
#
# Through the inference runners: top-down formulations crop every ground-truth box, the
# bottom-up one sees the whole image; poses are mapped back to image pixels.

# %%
boxes = np.asarray(example[schema.BOXES])
panels, titles = [], []
for name, (setup, predict, description) in models.items():
    pipeline = setup.data.eval_pipeline
    runner = make_runner(
        setup.formulation, predict, input_size=pipeline.input_size, margin=pipeline.margin
    )
    result = runner(image, boxes)  # the ground-truth boxes; a bottom-up runner does not use them
    panels.append(draw_poses(image, result.poses, min_score=0.1))
    titles.append(f"{name}\n{description.split('(')[0].strip()}")
show(panels, titles, size=3)
