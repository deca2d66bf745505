"""The training loop: data -> the jitted step over a device mesh -> metrics, checkpoints, pictures.

``train(cfg, run_dir)`` is importable (notebooks, tests, sweeps); ``python -m posejax.train``
only parses the config and calls it. What runs on the devices (initial state, train step,
predict, shardings) comes from :func:`posejax.train.program.build_program`; :func:`run` only
feeds it and, at a step, logs, evaluates and checkpoints (separate ``if``s, one helper each).

The loop resumes automatically from the newest checkpoint in ``run_dir`` (parameters,
optimizer, step, and the data iterator's position), so re-running a killed command continues
where it stopped and ends with the same metrics.

Data parallelism: each host reads its own share of the data (``jax.process_index()``) and the
program assembles the shares into one global batch sharded over the ``data`` mesh axis, so the
same code runs on 1 device, N local devices, or a pod.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path

import cv2
import jax
import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from posejax.data.pipeline import ReadAhead, make_train_iterator
from posejax.data.splits import open_split
from posejax.evaluation.evaluator import evaluate
from posejax.geometry import invert_affine
from posejax.inference.draw import draw_prediction, grid, render_map, save_png
from posejax.runs.checkpoint import Checkpointer
from posejax.runs.setup import Setup, TrainerConfig, build_setup
from posejax.runs.state import count_params
from posejax.train import distributed
from posejax.train.metrics_writer import MetricWriter, read_metrics
from posejax.train.program import Program, build_program, make_mesh

log = logging.getLogger(__name__)


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN/inf; the message names the step and the terms."""


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train and evaluate one configuration in ``run_dir``; returns the final metrics."""
    distributed.initialize(cfg.get("distributed"))  # before anything starts a JAX backend
    run_dir = Path(run_dir).absolute()
    setup = build_setup(cfg)
    return run(setup, run_dir)


def run(setup: Setup, run_dir: Path) -> dict[str, float]:
    """Train ``setup`` in ``run_dir`` (resuming from its newest checkpoint); the final metrics.

    The run directory gets ``config.json``, ``metrics.jsonl`` (a row every ``log_every`` steps,
    with the ``val/`` metrics every ``eval_every``), ``tensorboard/``, ``visuals/``,
    ``checkpoints/``, and at the end ``predictions.json`` and ``final_metrics.json``.
    """
    trainer = setup.trainer
    is_chief = jax.process_index() == 0
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_chief:
        _write_atomic(run_dir / "config.json", json.dumps(setup.config, indent=2, default=str))
    # Masks the formulation does not read are not even decoded (about half the read cost).
    needs = setup.formulation.batch_keys
    train_source = open_split(setup.data, setup.data.train_split, needs=needs)
    eval_source = open_split(setup.data, setup.data.eval_split, needs=needs)
    iterator = _train_iterator(setup, train_source)
    batch = next(iterator)
    program = build_program(setup, make_mesh(), batch)
    checkpointer = Checkpointer(run_dir / "checkpoints", max_to_keep=trainer.keep_checkpoints)
    restored = _restore(checkpointer, program, trainer, run_dir)
    start_step, state = 0, program.state
    if restored is not None:
        start_step, state, data_state = restored
        iterator.close()  # the fresh iterator replaces it (and its worker processes)
        iterator = _train_iterator(setup, train_source, data_state)
        batch = next(iterator)
        log.info("resumed from step %d in %s", start_step, run_dir)
    writer = MetricWriter(
        run_dir,
        resume_step=start_step if restored is not None else None,
        tensorboard=trainer.tensorboard,
        enabled=is_chief,
    )
    if is_chief:
        _log_start(setup, state, run_dir)
    meter = _Meter(program, trainer.batch_size, _last_logged(run_dir, start_step, "train_seconds"))
    bar = _progress_bar(setup, start_step, enabled=trainer.progress and is_chief)
    evaluate_at = functools.partial(_evaluate, program, setup, eval_source)
    rng = jax.random.key(trainer.seed)  # the same key every step: see train.step
    final_metrics, reported_skips = None, 0
    try:
        for step in range(start_step, trainer.steps):
            state, metrics = program.train_step(state, program.shard(batch), rng)
            meter.add(metrics)
            done, last = step + 1, step + 1 == trainer.steps
            # Fetch the next batch while the device works on this step.
            data_state = iterator.get_state()
            batch = None if last else next(iterator)
            bar.update(1)

            row = {}
            if done % trainer.log_every == 0 or last:
                reported_skips = _check_finite(
                    state, program.monitored_names, trainer.on_nonfinite, reported_skips
                )
                row = meter.row(done, state)
                bar.set_postfix(_postfix(row))
            if done % trainer.eval_every == 0 or last:  # a logging step too (check_trainer)
                result = evaluate_at(state.params, final=last, keep_samples=trainer.num_visualize)
                row |= {f"val/{k}": v for k, v in result.metrics.items()}
                if is_chief:
                    _save_evaluation(run_dir, done, result, setup.formulation, writer, final=last)
                if last:
                    final_metrics = dict(result.metrics)
            if row:
                writer.write(done, row)
                meter.restart()  # the evaluation just run is not training time
            if done % trainer.checkpoint_every == 0 or last:
                # data_state is the position of the batch *after* this step: exactly where a
                # resumed run must continue.
                checkpointer.save(done, state, data_state)
    finally:
        bar.close()
        checkpointer.close()
        writer.close()
        iterator.close()

    if final_metrics is None:  # resumed a run that had already finished: re-evaluate it
        final_metrics = evaluate_at(state.params, final=True).metrics
    final_metrics |= {
        "train_steps": float(trainer.steps),
        "train_batch_size": float(trainer.batch_size),
        "train_minutes": meter.train_seconds / 60.0,
    }
    if is_chief:
        _write_atomic(run_dir / "final_metrics.json", json.dumps(final_metrics, indent=2))
    return final_metrics


def _train_iterator(setup: Setup, source, data_state=None):
    """This host's share of the training stream (``batch_size / process_count`` rows a step),
    continuing from ``data_state`` (a checkpoint's iterator position) when given, made ahead of
    the loop in a low-priority thread (:class:`~posejax.data.pipeline.ReadAhead`)."""
    processes = jax.process_count()
    local_batch = setup.trainer.batch_size // processes
    pipeline = dataclasses.replace(setup.data.pipeline, batch_size=local_batch)
    iterator = make_train_iterator(
        source, pipeline, shard_index=jax.process_index(), shard_count=processes
    )
    if data_state is not None:
        iterator.set_state(data_state)
    return ReadAhead(iterator)


def _restore(checkpointer: Checkpointer, program: Program, trainer: TrainerConfig, run_dir: Path):
    """``(step, state, data_state)`` of the newest readable checkpoint, or None to start afresh.

    With ``trainer.resume=false`` an existing checkpoint is an error, never overwritten. An
    unreadable checkpoint (cut by a kill) is set aside and the one before it restored.
    """
    if not trainer.resume:
        if checkpointer.all_steps():
            raise FileExistsError(
                f"{run_dir} already holds checkpoints {checkpointer.all_steps()} and "
                "trainer.resume=false; choose another run directory or delete it"
            )
        return None
    restored = checkpointer.restore_latest(program.state, set_aside_unreadable=True)
    if restored is None:
        return None
    step, state, data_state = restored
    return step, program.replicate(state), data_state


def _log_start(setup: Setup, state, run_dir: Path) -> None:
    log.info(
        "%s: %d parameters, %d devices, batch %d, run dir %s",
        type(setup.formulation).__name__,
        count_params(state.params),
        jax.device_count(),
        setup.trainer.batch_size,
        run_dir,
    )


def _progress_bar(setup: Setup, start_step: int, *, enabled: bool) -> tqdm:
    return tqdm(
        total=setup.trainer.steps,
        initial=start_step,
        desc=type(setup.formulation).__name__,
        disable=not enabled,
        dynamic_ncols=True,
    )


def _postfix(row: dict) -> dict[str, str]:
    """The progress bar's loss and images/s."""
    loss = "skipped" if row["loss"] is None else f"{row['loss']:.4g}"
    return {"loss": loss, "img_s": f"{row['images_per_sec']:.0f}"}


class _Meter:
    """The logged training metrics: each step's metrics kept on the device until the log row,
    then fetched at once and summed on the host; and the training wall time.

    Nothing is dispatched per step: summing on the device (one jitted add a step) cost 3-6 %
    of the heatmap loop on 2 cores (2026-12-03, ``benchmarks/bench_loop.py``), fetching a
    row's few hundred scalars costs milliseconds once per row.

    ``train_seconds`` excludes evaluation and is carried over a resume: the x axis of the
    learning curves against time and the budget column of the comparison tables.
    """

    def __init__(self, program: Program, batch_size: int, train_seconds: float):
        self.schedule, self.batch_size = program.schedule, batch_size
        self.train_seconds = train_seconds
        self.restart()

    def restart(self) -> None:
        self.pending: list[dict[str, jax.Array]] = []
        self.start = time.perf_counter()

    @property
    def steps(self) -> int:
        return len(self.pending)

    def add(self, metrics: dict[str, jax.Array]) -> None:
        self.pending.append(metrics)

    def row(self, done: int, state) -> dict[str, float | None]:
        """The ``metrics.jsonl`` row of the steps since the last one (host sync)."""
        host = jax.device_get(self.pending)
        elapsed = time.perf_counter() - self.start
        self.train_seconds += elapsed
        sums = {k: float(np.sum([step[k] for step in host], dtype=np.float64)) for k in host[0]}
        # Means over the applied steps: a skipped step's NaN does not blank the row.
        applied = sums.pop("applied_steps")
        row = {k: v / applied if applied else None for k, v in sums.items()}
        row["lr"] = float(self.schedule(done - 1))
        row["images_per_sec"] = self.steps * self.batch_size / max(elapsed, 1e-9)
        row["skipped_steps"] = int(state.skipped_steps)
        row["train_seconds"] = self.train_seconds
        return row


def _evaluate(program: Program, setup: Setup, source, params, *, final: bool, keep_samples=0):
    """The evaluator on the model at ``params``: ``trainer.eval_images`` images, or
    ``final_eval_images`` for the final evaluation."""
    trainer = setup.trainer
    return evaluate(
        functools.partial(program.predict, params),
        setup.formulation,
        source,
        setup.data.eval_pipeline,
        num_images=trainer.final_eval_images if final else trainer.eval_images,
        encode=program.encode,
        keep_samples=keep_samples,
    )


def _save_evaluation(run_dir: Path, step: int, result, formulation, writer, *, final: bool):
    """Visuals of an evaluation (PNG and TensorBoard); the final one's COCO results."""
    _save_visuals(run_dir, step, result.samples, formulation, writer)
    if final:
        (run_dir / "predictions.json").write_text(json.dumps(result.results))


def _last_logged(run_dir: Path, step: int, key: str) -> float:
    """``key`` of the last ``metrics.jsonl`` row at or before ``step`` (0.0 if none)."""
    if not (run_dir / "metrics.jsonl").exists():
        return 0.0
    rows = [r for r in read_metrics(run_dir) if r.get("step", step + 1) <= step]
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    return values[-1] if values else 0.0


def _write_atomic(path: Path, text: str) -> None:
    """A kill mid-write leaves the old file, never half of the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _check_finite(state, names: list[str], policy: str, reported: int = 0) -> int:
    """Raise (``stop``) or warn (``skip``, once per new skip) about non-finite steps.

    Returns the number of skipped steps reported so far.
    """
    first_bad = int(state.first_bad_step)
    skipped = int(state.skipped_steps)
    if first_bad < 0 or skipped == reported:
        return reported
    bad = [n for n, b in zip(names, np.asarray(state.bad_terms), strict=True) if b]
    message = (
        f"non-finite value at step {first_bad + 1} in {', '.join(bad)}; "
        f"{skipped} update(s) skipped so far"
    )
    if policy == "stop":
        raise NonFiniteError(
            message + ". The update was not applied and the last checkpoint is intact "
            "(set trainer.on_nonfinite=skip to drop such steps and continue)."
        )
    log.warning(message + " (trainer.on_nonfinite=skip: the updates were dropped)")
    return skipped


def _save_visuals(run_dir: Path, step: int, samples: list[dict], formulation, writer) -> None:
    """``visuals/step_<step>_poses.png``: each sample on its original image, enlarged to a
    readable size (at least 256 px), ground truth in green, the prediction in the limb colours
    (a detector's boxes in yellow), and beside it the formulation's first display map warped
    back onto the image; the caption gives each scored person's OKS and the people found /
    present. One PNG per display map as well (``step_<step>_<map>.png``, at map resolution)."""
    if not samples:
        return
    specs = formulation.display_specs  # how each display map is drawn
    first_map = next(iter(samples[0]["maps"]), None)
    panels = []
    for s in samples:
        original, boxes = s["original"], s["original_boxes"]
        found = np.asarray(s["scores"]) >= formulation.people_threshold
        boxes = None if boxes is None else np.asarray(boxes)[found]
        oks = ", ".join(f"{v:.2f}" for v in original["oks"] if np.isfinite(v))
        caption = f"green: truth; OKS {oks or '-'}; found {int(found.sum())}/{len(original['gt'])}"
        value_map = None
        if first_map is not None:
            caption += f"; right: {first_map}"
            value_map = _map_on_image(
                render_map(s["maps"][first_map], specs[first_map]),
                s["image"].shape[:2],
                s["transform"],
                original["image"].shape[:2],
            )
        panels.append(
            draw_prediction(
                original["image"],
                original["gt"],
                np.asarray(s["original_poses"])[found],
                caption=caption,
                boxes=boxes,
                box_scores=None if boxes is None else np.asarray(s["scores"])[found],
                value_map=value_map,
            )
        )
    picture = grid(panels, columns=2)
    save_png(run_dir / "visuals" / f"step_{step:06d}_poses.png", picture)
    writer.write_image(step, "val/poses", picture)
    for name in samples[0]["maps"]:
        maps = [render_map(s["maps"][name], specs[name]) for s in samples]
        cell = samples[0]["image"].shape[:2]
        picture = grid(maps, cell_size=cell)
        save_png(run_dir / "visuals" / f"step_{step:06d}_{name}.png", picture)
        writer.write_image(step, f"val/{name}", picture)


def _map_on_image(rgb_map, input_hw, transform, image_hw) -> np.ndarray:
    """A rendered ``(H, W, 3)`` map of the network input -> the original image's pixel grid
    (through the inverse of the input ``transform``)."""
    h, w = input_hw
    resized = cv2.resize(rgb_map.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    back = invert_affine(np.asarray(transform, np.float64))
    height, width = image_hw
    return cv2.warpAffine(resized, back, (width, height), flags=cv2.INTER_NEAREST)
