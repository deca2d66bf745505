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
# # Comparing the formulations of one sweep
#
# Loads the runs of one sweep (any folder whose sub-folders hold `final_metrics.json`: by default
# `results/quick/runs`, written by `make compare`) and shows
#
# 1. the comparison table (the summariser's, `posejax.experiments.summarize`),
# 2. accuracy against inference time,
# 3. PCK@0.2 per joint for every run,
# 4. the training curves,
# 5. each run's validation predictions side by side (the `visuals/` PNGs the trainer wrote).
#
# Point it at another sweep with `POSEJAX_RUNS=<sweep dir> jupyter lab` (or edit `RUNS` below).

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from posejax import skeleton
from posejax.experiments.summarize import DEFAULT_METRICS, collect, table


def repo_root() -> Path:
    """The checkout this notebook lives in (relative default paths are taken from there)."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists():
            return folder
    return here


RUNS = Path(os.environ.get("POSEJAX_RUNS", repo_root() / "results" / "quick" / "runs"))
rows = collect(RUNS)
print(f"{len(rows)} runs under {RUNS}")

# %% [markdown]
# ## 1. The table
#
# The label of a run is its folder; its formulation is read from the run's `config.json`.


# %%
def formulation_of(run_dir: Path) -> str:
    path = run_dir / "config.json"
    if not path.exists():  # not a training run, e.g. the mean-pose baseline of `make compare`
        return "-"
    config = json.loads(path.read_text())
    return config["formulation"]["_target_"].rsplit(".", 1)[-1]


for row in rows:
    row["dir"] = RUNS / row["run"]
    row["formulation"] = formulation_of(row["dir"])


def cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


header, body = table(rows, DEFAULT_METRICS)  # run, the overrides that vary, the metrics
header.insert(1, "class")
for row, line in zip(rows, body, strict=True):
    line.insert(1, row["formulation"])
markdown = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
markdown += ["| " + " | ".join(cell(v) for v in line) + " |" for line in body]
display(Markdown("\n".join(markdown)))

# %% [markdown]
# ## 2. Accuracy against time
#
# `ms_per_image` is network + decoding for a whole image (a top-down image pays one crop per
# person, with ground-truth boxes and no detector).

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
for ax, metric in zip(axes, ("OKS_AP", "PCK@0.2"), strict=True):
    for i, row in enumerate(rows):
        point = (row["metrics"].get("ms_per_image", np.nan), row["metrics"].get(metric, np.nan))
        if not np.isfinite(point).all():  # e.g. a baseline without timing
            continue
        ax.scatter(*point, color=f"C{i}", s=40)
        ax.annotate(row["run"], point, fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("ms / image")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# ## 3. PCK@0.2 per joint

# %%
joints = list(skeleton.COCO_KEYPOINTS)
fig, ax = plt.subplots(figsize=(10, 3.5))
width = 0.8 / len(rows)
for i, row in enumerate(rows):
    values = [row["metrics"].get(f"PCK@0.2/{j}", np.nan) for j in joints]
    ax.bar(np.arange(len(joints)) + i * width, values, width, label=row["run"])
ax.set_xticks(np.arange(len(joints)) + 0.4 - width / 2)
ax.set_xticklabels(joints, rotation=60, ha="right", fontsize=8)
ax.set_ylabel("PCK@0.2")
ax.legend(fontsize=8)
ax.grid(axis="y", alpha=0.3)
fig.tight_layout()

# %% [markdown]
# ## 4. Training curves (`metrics.jsonl`)

# %%
fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(9, 3.2))
for i, row in enumerate(rows):
    if not (row["dir"] / "metrics.jsonl").exists():  # not a training run
        continue
    log = [json.loads(line) for line in (row["dir"] / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log]
    # Losses of different formulations have different units: each curve relative to its start.
    loss = np.array([r["loss"] for r in log])
    loss_ax.plot(steps, loss / loss[0], color=f"C{i}", label=row["run"])
    evals = [r for r in log if "val/PCK@0.2" in r]
    val_ax.plot([r["step"] for r in evals], [r["val/PCK@0.2"] for r in evals], "o-", color=f"C{i}")
loss_ax.set_ylabel("loss / first logged loss")
val_ax.set_ylabel("validation PCK@0.2")
for ax in (loss_ax, val_ax):
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
loss_ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 5. Predictions side by side
#
# The last validation pictures of each run: predicted skeletons (ground-truth joints in green)
# on the network inputs: person crops for top-down runs, whole images for bottom-up ones.

# %%
fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.6 * len(rows)), squeeze=False)
for ax, row in zip(axes[:, 0], rows, strict=True):
    pictures = sorted((row["dir"] / "visuals").glob("step_*_poses.png"))
    if pictures:
        ax.imshow(plt.imread(pictures[-1]))
        ax.set_title(f"{row['run']} ({row['formulation']}): {pictures[-1].name}", fontsize=9)
    else:
        ax.set_title(f"{row['run']}: no visuals", fontsize=9)
    ax.axis("off")
fig.tight_layout()
