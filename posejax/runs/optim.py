"""Optimizer and learning-rate schedule from plain settings."""

from __future__ import annotations

import dataclasses

import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """``conf/optim/*.yaml``.

    Attributes:
      name: "adamw" or "sgd" (momentum 0.9, Nesterov).
      lr: peak learning rate.
      weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
      warmup_steps: linear warm-up from 0.
      schedule: "cosine" (to ``final_lr_fraction * lr``) or "constant".
      final_lr_fraction: end of the cosine decay as a fraction of ``lr``.
      clip_norm: global gradient-norm clipping; 0 disables it.
    """

    name: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    schedule: str = "cosine"
    final_lr_fraction: float = 0.01
    clip_norm: float = 1.0


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=cfg.lr,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=cfg.lr * cfg.final_lr_fraction,
        )
    if cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)), optax.constant_schedule(cfg.lr)],
            [max(warmup, 1)],
        )
    raise ValueError(f"optim.schedule={cfg.schedule!r}: expected one of 'cosine', 'constant'")


def build_optimizer(
    cfg: OptimConfig, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(cfg, total_steps)
    if cfg.name == "adamw":
        core = optax.adamw(schedule, weight_decay=cfg.weight_decay)
    elif cfg.name == "sgd":
        core = optax.chain(
            optax.add_decayed_weights(cfg.weight_decay),
            optax.sgd(schedule, momentum=0.9, nesterov=True),
        )
    else:
        raise ValueError(f"optim.name={cfg.name!r}: expected one of 'adamw', 'sgd'")
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    return optax.chain(*parts, core), schedule
