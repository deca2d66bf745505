"""The training loop: data -> jitted step over a device mesh -> metrics, checkpoints, pictures.

``train(cfg, run_dir)`` is importable (notebooks, tests, sweeps); ``python -m posejax.train``
only parses the config and calls it. The loop resumes automatically from the newest checkpoint
in ``run_dir`` (parameters, optimizer, step, and the data iterator's position), so re-running a
killed command continues where it stopped and ends with the same metrics.

Data parallelism: one mesh axis ``data`` over every device of every host. Batches are sharded
along it, parameters and optimizer state are replicated, and the compiler inserts the gradient
all-reduce. Each host reads its own shard of the data (``jax.process_index()``), so the same code
runs on 1 device, N local devices, or a pod.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from posejax.data.pipeline import make_train_iterator
from posejax.data.splits import open_split
from posejax.evaluation.evaluator import evaluate
from posejax.inference.draw import colourise, draw_poses, grid, save_png
from posejax.runs.checkpoint import Checkpointer
from posejax.runs.setup import Setup, build_setup
from posejax.runs.state import count_params
from posejax.train import distributed
from posejax.train.metrics_writer import MetricWriter, read_metrics
from posejax.train.program import build_program, make_mesh

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
    trainer, formulation = setup.trainer, setup.formulation
    is_chief = jax.process_index() == 0
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_chief:
        _write_atomic(run_dir / "config.json", json.dumps(setup.config, indent=2, default=str))

    # --- data ---------------------------------------------------------------------------
    train_source = open_split(setup.data, setup.data.train_split)
    eval_source = open_split(setup.data, setup.data.eval_split)
    processes = jax.process_count()
    local_batch = trainer.batch_size // processes
    pipeline = dataclasses.replace(setup.data.pipeline, batch_size=local_batch)
    iterator = make_train_iterator(
        train_source, pipeline, shard_index=jax.process_index(), shard_count=processes
    )

    # --- model, optimizer, state ----------------------------------------------------------
    first_batch = next(iterator)
    program = build_program(setup, make_mesh(), first_batch)
    state = program.state

    checkpointer = Checkpointer(run_dir / "checkpoints", max_to_keep=trainer.keep_checkpoints)
    restored = (
        checkpointer.restore_latest(state, set_aside_unreadable=True) if trainer.resume else None
    )
    if not trainer.resume and checkpointer.all_steps():
        raise FileExistsError(
            f"{run_dir} already holds checkpoints {checkpointer.all_steps()} and "
            "trainer.resume=false; choose another run directory or delete it"
        )
    if restored is not None:
        start_step, state, data_state = restored
        state = program.replicate(state)
        _close(iterator)  # the fresh iterator below replaces it (and its worker processes)
        iterator = make_train_iterator(
            train_source, pipeline, shard_index=jax.process_index(), shard_count=processes
        )
        iterator.set_state(data_state)
        first_batch = next(iterator)
        log.info("resumed from step %d in %s", start_step, run_dir)
    else:
        start_step = 0
    writer = MetricWriter(
        run_dir,
        resume_step=start_step if restored is not None else None,
        tensorboard=trainer.tensorboard,
        enabled=is_chief,
    )
    if is_chief:
        log.info(
            "%s: %d parameters, %d devices, batch %d, run dir %s",
            type(formulation).__name__,
            count_params(state.params),
            jax.device_count(),
            trainer.batch_size,
            run_dir,
        )

    base_rng = jax.random.key(trainer.seed)

    def predict(images):
        return program.predict(state.params, images)

    # --- loop -----------------------------------------------------------------------------
    final_metrics: dict[str, float] = {}
    sums: dict[str, jax.Array] | None = None
    reported_skips = 0
    interval_steps, interval_start = 0, time.perf_counter()
    # Training wall time (evaluation excluded), carried over a resume: the x axis of the
    # learning curves against time and the budget column of the comparison tables.
    train_seconds = _last_logged(run_dir, start_step, "train_seconds")
    batch = first_batch
    bar = tqdm(
        total=trainer.steps,
        initial=start_step,
        desc=type(formulation).__name__,
        disable=not (trainer.progress and is_chief),
        dynamic_ncols=True,
    )
    try:
        for step in range(start_step, trainer.steps):
            rng = jax.random.fold_in(base_rng, step)
            state, metrics = program.train_step(state, program.shard(batch), rng)
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
            interval_steps += 1
            done = step + 1
            # Fetch the next batch while the device works on this step.
            data_state = iterator.get_state()
            batch = next(iterator) if done < trainer.steps else None
            bar.update(1)

            if done % trainer.log_every == 0 or done == trainer.steps:
                reported_skips = _check_finite(
                    state, program.monitored_names, trainer.on_nonfinite, reported_skips
                )
                host = jax.device_get(sums)
                elapsed = time.perf_counter() - interval_start
                train_seconds += elapsed
                # Means over the applied steps: a skipped step's NaN does not blank the row.
                applied = float(host.pop("applied_steps"))
                row = {k: float(v) / applied if applied else None for k, v in host.items()}
                row["lr"] = float(program.schedule(done - 1))
                row["images_per_sec"] = interval_steps * trainer.batch_size / max(elapsed, 1e-9)
                row["skipped_steps"] = int(state.skipped_steps)
                row["train_seconds"] = train_seconds
                loss_text = "skipped" if row["loss"] is None else f"{row['loss']:.4g}"
                bar.set_postfix(loss=loss_text, img_s=f"{row['images_per_sec']:.0f}")
                if done % trainer.eval_every == 0 or done == trainer.steps:
                    last = done == trainer.steps
                    result = evaluate(
                        predict,
                        formulation,
                        eval_source,
                        setup.data.eval_pipeline,
                        num_images=trainer.final_eval_images if last else trainer.eval_images,
                        encode=program.encode,
                        keep_samples=trainer.num_visualize,
                    )
                    row.update({f"val/{k}": v for k, v in result.metrics.items()})
                    if is_chief:
                        _save_visuals(run_dir, done, result.samples, formulation, writer)
                    if last:
                        final_metrics = dict(result.metrics)
                        if is_chief:
                            (run_dir / "predictions.json").write_text(json.dumps(result.results))
                writer.write(done, row)
                sums, interval_steps, interval_start = None, 0, time.perf_counter()
            if done % trainer.checkpoint_every == 0 or done == trainer.steps:
                # data_state is the position of the batch *after* this step: exactly where a
                # resumed run must continue.
                checkpointer.save(done, state, data_state)
    finally:
        bar.close()
        checkpointer.close()
        writer.close()
        _close(iterator)

    if not final_metrics:  # resumed a run that had already finished: re-evaluate it
        final_metrics = evaluate(
            predict,
            formulation,
            eval_source,
            setup.data.eval_pipeline,
            num_images=trainer.final_eval_images,
            encode=program.encode,
        ).metrics
    final_metrics["train_steps"] = float(trainer.steps)
    final_metrics["train_batch_size"] = float(trainer.batch_size)
    final_metrics["train_minutes"] = train_seconds / 60.0
    if is_chief:
        _write_atomic(run_dir / "final_metrics.json", json.dumps(final_metrics, indent=2))
    return final_metrics


def _last_logged(run_dir: Path, step: int, key: str) -> float:
    """``key`` of the last ``metrics.jsonl`` row at or before ``step`` (0.0 if none)."""
    if not (run_dir / "metrics.jsonl").exists():
        return 0.0
    rows = [r for r in read_metrics(run_dir) if r.get("step", step + 1) <= step]
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    return values[-1] if values else 0.0


def _close(iterator) -> None:
    """Grain iterators with worker processes must be closed; plain ones have no close()."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


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
    if not samples:
        return
    panels = []
    for s in samples:
        panel = (
            draw_poses(s["image"], s["gt"], point_colour=(0, 255, 0))
            if len(s["gt"])
            else s["image"]
        )
        panels.append(draw_poses(panel, s["poses"], min_score=0.1))
    picture = grid(panels)
    save_png(run_dir / "visuals" / f"step_{step:06d}_poses.png", picture)
    writer.write_image(step, "val/poses", picture)
    for name in samples[0]["maps"]:
        maps = [
            colourise(s["maps"][name]) if s["maps"][name].ndim == 2 else s["maps"][name]
            for s in samples
        ]
        cell = samples[0]["image"].shape[:2]
        picture = grid(maps, cell_size=cell)
        save_png(run_dir / "visuals" / f"step_{step:06d}_{name}.png", picture)
        writer.write_image(step, f"val/{name}", picture)
