"""Inference latency per image against the number of people: bottom-up PAF vs top-down.

Scenes with exactly ``P`` people placed (``P`` in ``--people``) are rendered by the dataset's
renderer (``posejax.data.render.render_scene`` with ``min_people = max_people = P``; people that
end up almost invisible are dropped by the renderer, so the table also gives the mean number
actually present). Each image goes through the stages of an inference runner, each timed alone
(median of ``--repeats`` runs per image, then the mean over ``--scenes`` images):

* **bottom-up** (``formulation=paf``, default config): *prepare* (letterbox warp of the image to
  the network input), *network* (the jitted model on the one image), *parse* (the formulation's
  ``decode``: peaks, PAF line integrals, matching and assembly).
* **top-down** (``formulation=heatmap`` by default): *prepare* (one crop warp per person),
  *network* (the jitted model on the ``P`` crops as one batch), *decode* (``decode`` of the
  ``P`` outputs). People boxes come from the ground truth: the person detector a real top-down
  system needs is *not* included, so top-down times are a lower bound.

Networks carry their initial weights: their cost does not depend on the values. Parsing does
(the number of peaks), so the PAF parse runs on what a perfect network would output for the
scene (``oracle_outputs(encode(batch))``) instead of untrained outputs, which would be noise
with peaks everywhere.

Goal (project issue): bottom-up total at most 1.5 x from 1 to 16 people.

Run:  .venv/bin/python benchmarks/bench_inference.py [--people 1 2 4 8 16] [overrides...]
(writes benchmarks/results/bench_inference.json and .md)
"""

from __future__ import annotations

import argparse

import cv2
import jax
import numpy as np
from common import (
    compose_config,
    markdown_table,
    median,
    time_calls,
    write_report,
)

from posejax.data.render import SceneConfig, render_scene
from posejax.data.transforms import bottom_up_affine, top_down_affine, transform_keypoints
from posejax.runs.setup import build_setup
from posejax.runs.state import ModelDef, jitted_predict

GOAL = 1.5


class Runner:
    """One formulation's model (initial weights) and settings, from the default config."""

    def __init__(self, formulation: str, overrides=()):
        setup = build_setup(compose_config([f"formulation={formulation}", *overrides]))
        self.name = formulation
        self.formulation = setup.formulation
        self.pipeline = setup.data.eval_pipeline
        model_def = ModelDef(setup.model)
        self._predict = jitted_predict(model_def, model_def.initial_params)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.pipeline.input_size)

    def network(self, images: np.ndarray):
        return jax.block_until_ready(self._predict(images))

    def warp(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        h, w = self.input_size
        return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR)


def time_bottom_up(runner: Runner, scene: dict, repeats: int) -> dict[str, float]:
    image = scene["image"]
    matrix = bottom_up_affine(image.shape[:2], runner.input_size)
    warped = runner.warp(image, matrix)[None]
    perfect = _perfect_outputs(runner, scene, matrix)
    stages = {
        "prepare": lambda: runner.warp(image, matrix)[None],
        "network": lambda: runner.network(warped),
        "parse": lambda: runner.formulation.decode(perfect),
    }
    times = {k: 1e3 * median(time_calls(f, repeats=repeats)) for k, f in stages.items()}
    times["people_found"] = float(len(runner.formulation.decode(perfect)[0].poses))
    return times


def _perfect_outputs(runner: Runner, scene: dict, matrix: np.ndarray) -> dict:
    """What a perfect network would output for the scene: ``oracle_outputs`` of its targets.

    Only the formulation contract is used (``encoder_batch`` names any batch key this scene
    lacks; ``oracle_outputs`` has the head's layout), so any bottom-up formulation can be timed.
    """
    keypoints = transform_keypoints(scene["keypoints"], matrix, runner.input_size)
    batch = {
        "keypoints": keypoints[None],
        "valid": np.ones((1, len(keypoints)), bool),
        "loss_mask": np.ones((1, *runner.input_size), np.float32),
    }
    formulation = runner.formulation
    targets = jax.jit(formulation.encode)(formulation.encoder_batch(batch))
    return jax.device_get(formulation.oracle_outputs(targets))


def time_top_down(runner: Runner, scene: dict, repeats: int) -> dict[str, float]:
    image = scene["image"]
    matrices = [top_down_affine(box, runner.input_size) for box in scene["boxes"]]

    def prepare():
        return np.stack([runner.warp(image, m) for m in matrices])

    crops = prepare()
    outputs = jax.device_get(runner.network(crops))
    stages = {
        "prepare": prepare,
        "network": lambda: runner.network(crops),
        "decode": lambda: runner.formulation.decode(outputs),
    }
    times = {k: 1e3 * median(time_calls(f, repeats=repeats)) for k, f in stages.items()}
    times["people_found"] = float(len(crops))
    return times


def render(people: int, scenes: int, image_size, seed: int) -> list[dict]:
    config = SceneConfig(
        image_size=tuple(image_size),
        min_people=people,
        max_people=people,
        min_height=0.25,
        max_height=0.6,
    )
    rng = np.random.default_rng([seed, people])
    return [render_scene(rng, config) for _ in range(scenes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, nargs="*", default=[1, 2, 4, 8, 16])
    parser.add_argument("--scenes", type=int, default=4, help="images per number of people")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per image and stage")
    parser.add_argument("--bottom-up", default="paf")
    parser.add_argument("--top-down", default="heatmap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both models")
    args = parser.parse_args()

    bottom_up = Runner(args.bottom_up, args.overrides)
    top_down = Runner(args.top_down, args.overrides)
    # Images at the bottom-up input size: the letterbox warp is then a plain copy.
    image_size = bottom_up.input_size
    rows = []
    for people in args.people:
        scenes = render(people, args.scenes, image_size, args.seed)
        present = float(np.mean([len(s["keypoints"]) for s in scenes]))
        for runner, timer in ((bottom_up, time_bottom_up), (top_down, time_top_down)):
            per_scene = [timer(runner, s, args.repeats) for s in scenes]
            stages = {k: float(np.mean([t[k] for t in per_scene])) for k in per_scene[0]}
            found = stages.pop("people_found")
            row = {
                "approach": "bottom-up" if runner is bottom_up else "top-down",
                "formulation": runner.name,
                "people_placed": people,
                "people_present": present,
                "people_found": found,
                "stages_ms": stages,
                "total_ms": float(sum(stages.values())),
            }
            rows.append(row)
            print(
                f"{row['approach']:9s} P={people:2d}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
                + f" -> {row['total_ms']:.2f} ms",
                flush=True,
            )

    growth = {}
    lo, hi = min(args.people), max(args.people)
    for approach in ("bottom-up", "top-down"):
        total = {r["people_placed"]: r["total_ms"] for r in rows if r["approach"] == approach}
        growth[approach] = total[hi] / total[lo]

    table = [
        "# Inference latency per image vs number of people",
        "",
        f"Bottom-up: `{args.bottom_up}` ({'x'.join(map(str, bottom_up.input_size))} input, "
        "parsing on perfect maps); top-down: "
        f"`{args.top_down}` ({'x'.join(map(str, top_down.input_size))} crops, ground-truth "
        f"boxes: no detector). {args.scenes} rendered {image_size[0]}x{image_size[1]} images "
        f"per row, median of {args.repeats} runs per stage and image; milliseconds.",
        "",
        *markdown_table(
            [
                "approach",
                "people placed",
                "present",
                "found",
                "prepare",
                "network",
                "parse / decode",
                "total",
            ],
            [
                [
                    r["approach"],
                    str(r["people_placed"]),
                    f"{r['people_present']:.1f}",
                    f"{r['people_found']:.1f}",
                    *(f"{v:.2f}" for v in r["stages_ms"].values()),
                    f"{r['total_ms']:.2f}",
                ]
                for r in sorted(rows, key=lambda r: (r["approach"], r["people_placed"]))
            ],
        ),
        "",
        f"Growth of the total from {lo} to {hi} people placed: bottom-up "
        f"{growth['bottom-up']:.2f}x (goal <= {GOAL}x: "
        f"{'met' if growth['bottom-up'] <= GOAL else 'not met'}), top-down "
        f"{growth['top-down']:.2f}x.",
    ]
    write_report(
        "bench_inference",
        {"settings": vars(args), "goal": GOAL, "growth": growth, "rows": rows},
        table,
    )


if __name__ == "__main__":
    main()
