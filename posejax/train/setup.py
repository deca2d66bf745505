"""The edge between Hydra configs and plain Python objects.

Everything after this module sees frozen dataclasses, modules and functions, never a
``DictConfig``. All start-up checks live here, so a bad combination fails before any data is
read or any step is compiled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import hydra
import jax
import jax.numpy as jnp
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from posejax.data.pipeline import PipelineConfig
from posejax.data.transforms import AugmentConfig
from posejax.formulations.base import INPUT_MODES, Formulation
from posejax.models import PoseModel
from posejax.train.optim import OptimConfig

PRECISIONS = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


class ConfigError(ValueError):
    """A configuration that cannot work; the message says which key and why."""


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """``conf/trainer/*.yaml``.

    Attributes:
      steps: optimizer updates in total.
      batch_size: global batch size (split over devices and hosts).
      eval_batch_size: batch size of evaluation (defaults to ``batch_size``).
      log_every: steps between metric rows (loss averaged over the interval).
      eval_every: steps between validation runs (a multiple of ``log_every``).
      checkpoint_every: steps between checkpoints (a multiple of ``log_every``, so a resumed run
        logs exactly the rows an uninterrupted one would).
      keep_checkpoints: how many recent checkpoints to keep.
      seed: seeds parameters, data order and augmentation.
      precision: "fp32" or "bf16" (bf16 activations, fp32 parameters and loss).
      resume: continue from the run directory's latest checkpoint if there is one.
      eval_images: validation images per periodic evaluation (None: the whole split).
      final_eval_images: images for the final evaluation (None: the whole split).
      num_visualize: examples drawn into the validation PNGs.
      on_nonfinite: "stop" (raise, naming the step and term) or "skip" (drop the update, count).
      tensorboard: also write TensorBoard events.
      progress: show a tqdm progress bar.
    """

    steps: int = 2000
    batch_size: int = 32
    eval_batch_size: int | None = None
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    seed: int = 0
    precision: str = "fp32"
    resume: bool = True
    eval_images: int | None = 200
    final_eval_images: int | None = None
    num_visualize: int = 8
    on_nonfinite: str = "stop"
    tensorboard: bool = True
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``conf/data/*.yaml`` (the parts read by the trainer and evaluator)."""

    builder: str
    config: str | None
    config_overrides: dict
    data_dir: str
    manual_dir: str | None
    train_split: str
    eval_split: str
    builder_kwargs: dict
    pipeline: PipelineConfig
    eval_pipeline: PipelineConfig


@dataclasses.dataclass
class Setup:
    """What a training run is made of, built from a config."""

    formulation: Formulation
    model: PoseModel
    trainer: TrainerConfig
    optim: OptimConfig
    data: DataConfig
    dtype: Any
    config: dict  # the resolved config, for the run directory


def _dataclass_from(cls, node: Any, group: str):
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{group}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    return cls(**values)


def _formulation_class(cfg: DictConfig):
    target = cfg.formulation.get("_target_")
    cls = hydra.utils.get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, Formulation)):
        raise ConfigError(f"formulation._target_={target!r} is not a posejax Formulation")
    return cls


def build_formulation(cfg: DictConfig, *, stride: int, input_size: tuple[int, int]) -> Formulation:
    node = OmegaConf.to_container(cfg.formulation, resolve=True)
    node.pop("_partial_", None)
    node.pop("name", None)
    try:
        return hydra.utils.instantiate(node, stride=stride, input_size=tuple(input_size))
    except Exception as err:  # hydra wraps TypeErrors of unknown keys; say which group
        raise ConfigError(f"formulation: could not build {node.get('_target_')}: {err}") from err


def build_backbone(cfg: DictConfig, *, dtype, rngs: nnx.Rngs) -> nnx.Module:
    node = OmegaConf.to_container(cfg.backbone, resolve=True)
    node.pop("_partial_", None)
    node.pop("name", None)
    try:
        return hydra.utils.instantiate(node, dtype=dtype, rngs=rngs)
    except Exception as err:
        raise ConfigError(f"backbone: could not build {node.get('_target_')}: {err}") from err


def data_config(
    cfg: DictConfig, mode: str, *, batch_size: int, eval_batch_size: int, seed: int
) -> DataConfig:
    d = cfg.data
    if mode not in INPUT_MODES:
        raise ConfigError(f"formulation input mode {mode!r} is not one of {INPUT_MODES}")
    if mode not in d:
        raise ConfigError(f"data={d.builder} has no '{mode}' section, needed by this formulation")
    mode_cfg = d[mode]
    augment = _dataclass_from(AugmentConfig, d.augment, "data.augment")
    common = dict(
        mode=mode,
        input_size=tuple(mode_cfg.input_size),
        max_people=int(mode_cfg.get("max_people", 1)),
        margin=float(mode_cfg.get("margin", 1.25)),
        num_workers=int(d.num_workers),
        seed=seed,
        min_keypoints=int(d.get("min_keypoints", 1)),
    )
    pipeline = PipelineConfig(augment=augment, batch_size=batch_size, **common)
    eval_pipeline = PipelineConfig(
        augment=dataclasses.replace(augment, enabled=False), batch_size=eval_batch_size, **common
    )
    data_dir = _absolute(d.data_dir)
    return DataConfig(
        builder=d.builder,
        config=d.get("config"),
        config_overrides=_plain(d.get("config_overrides")),
        data_dir=data_dir,
        manual_dir=_absolute(d.get("manual_dir")),
        train_split=d.train_split,
        eval_split=d.eval_split,
        builder_kwargs=_plain(d.get("builder_kwargs")),
        pipeline=pipeline,
        eval_pipeline=eval_pipeline,
    )


def _plain(node: Any) -> dict:
    """An optional mapping from the config as a plain dict ({} when absent)."""
    if node is None:
        return {}
    return (
        OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    )


def _absolute(path: str | None) -> str | None:
    """Paths in configs are relative to where the command was launched."""
    if not path:
        return None
    return hydra.utils.to_absolute_path(path) if _in_hydra() else str(Path(path).absolute())


def _in_hydra() -> bool:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized()


def validate(trainer: TrainerConfig, data: DataConfig, stride: int, num_devices: int) -> None:
    """Start-up checks: each failure is one sentence naming the keys involved."""
    h, w = data.pipeline.input_size
    if h % stride or w % stride:
        raise ConfigError(
            f"input size {h}x{w} (data.{data.pipeline.mode}.input_size) is not divisible by the "
            f"backbone's output stride {stride} (backbone.output_stride)"
        )
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(trainer, name) or trainer.batch_size
        if value % num_devices:
            raise ConfigError(
                f"trainer.{name}={value} is not divisible by the {num_devices} devices in use; "
                f"choose a multiple of {num_devices}"
            )
    for name in ("eval_every", "checkpoint_every"):
        value = getattr(trainer, name)
        if value <= 0 or value % trainer.log_every:
            raise ConfigError(
                f"trainer.{name}={value} must be a positive multiple of "
                f"trainer.log_every={trainer.log_every}"
            )
    if trainer.precision not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={trainer.precision!r}: expected one of {sorted(PRECISIONS)}"
        )
    if trainer.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(
            f"trainer.on_nonfinite={trainer.on_nonfinite!r}: expected 'stop' or 'skip'"
        )
    if trainer.steps <= 0:
        raise ConfigError(f"trainer.steps={trainer.steps} must be positive")


def build_setup(cfg: DictConfig, *, num_devices: int | None = None) -> Setup:
    """Config -> formulation, model, and plain settings; raises ConfigError on bad combinations."""
    num_devices = num_devices or jax.device_count()
    trainer = _dataclass_from(TrainerConfig, cfg.trainer, "trainer")
    optim = _dataclass_from(OptimConfig, cfg.optim, "optim")
    if trainer.precision not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={trainer.precision!r}: expected one of {sorted(PRECISIONS)}"
        )
    dtype = PRECISIONS[trainer.precision]
    form_cls = _formulation_class(cfg)
    stride = int(cfg.backbone.output_stride)
    data = data_config(
        cfg,
        form_cls.input_mode,
        batch_size=trainer.batch_size,
        eval_batch_size=trainer.eval_batch_size or trainer.batch_size,
        seed=trainer.seed,
    )
    validate(trainer, data, stride, num_devices)
    formulation = build_formulation(cfg, stride=stride, input_size=data.pipeline.input_size)
    rngs = nnx.Rngs(trainer.seed)
    backbone = build_backbone(cfg, dtype=dtype, rngs=rngs)
    head = formulation.make_head(backbone.out_channels, rngs=rngs)
    model = PoseModel(backbone, head, dtype=dtype)
    return Setup(
        formulation=formulation,
        model=model,
        trainer=trainer,
        optim=optim,
        data=data,
        dtype=dtype,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
