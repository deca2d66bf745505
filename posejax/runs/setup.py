"""The edge between Hydra configs and plain Python objects.

Everything after this module sees frozen dataclasses, modules and functions, never a
``DictConfig``. All start-up checks live here, so a bad combination fails before any data is
read or any step is compiled.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import hydra
import jax
import jax.numpy as jnp
import tensorflow_datasets as tfds
from flax import nnx
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from posejax.data.pipeline import PipelineConfig
from posejax.data.transforms import AugmentConfig
from posejax.formulations.base import INPUT_MODES, TOP_DOWN, Formulation
from posejax.models import PoseModel
from posejax.runs.optim import OptimConfig, build_optimizer

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
    cache_mb: int
    pipeline: PipelineConfig
    eval_pipeline: PipelineConfig


# ---------------------------------------------------------------------------------------------
# Schemas: every key of the trainer, optim and data groups, with its type. A composed config is
# merged onto them at start-up, so a misspelt key (``+trainer.stpes=5``, or one in an experiment
# file) or a value of the wrong type fails before anything is built, naming the key. The
# backbone and formulation groups stay free-form (``_target_``); their keys are checked against
# the target's constructor instead (``_check_target_keys``).
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TopDownSchema:
    """``data.top_down``: one crop per person."""

    input_size: tuple[int, int] = MISSING  # (h, w)
    margin: float = 1.25  # context factor around the person box


@dataclasses.dataclass
class BottomUpSchema:
    """``data.bottom_up``: the whole image."""

    input_size: tuple[int, int] = MISSING  # (h, w)
    max_people: int = 1  # person slots M per image


@dataclasses.dataclass
class DataSchema:
    """``conf/data/*.yaml``.

    ``on_bad_example`` ("raise" or "skip") is handed to the dataset builders that take it (the
    real-data builders; ``synthetic_people`` has no bad input and ignores it).
    """

    builder: str = "synthetic_people"
    config: str | None = None
    config_overrides: dict[str, Any] | None = None
    data_dir: str = "data"
    manual_dir: str | None = None
    builder_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    on_bad_example: str = "raise"
    train_split: str = "train"
    eval_split: str = "validation"
    num_workers: int = 0
    # MiB of decoded examples kept in memory per opened split (0: off); see
    # posejax.data.splits.DecodedCache. The synthetic train split takes about 0.5 GiB.
    cache_mb: int = 1024
    min_keypoints: int = 1
    top_down: TopDownSchema | None = None
    bottom_up: BottomUpSchema | None = None
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


def checked_group(cfg: DictConfig, group: str, schema: type) -> DictConfig:
    """``cfg[group]`` merged onto ``schema``: typed, with defaults; ConfigError on a bad key."""
    if cfg.get(group) is None:
        raise ConfigError(f"the config has no '{group}' group")
    try:
        # Resolved first, so that interpolations into other groups still work in the copy.
        values = OmegaConf.to_container(cfg[group], resolve=True)
        return OmegaConf.merge(_writable(OmegaConf.structured(schema)), values)
    except ConfigKeyError as err:
        where = f"{group}.{err.full_key}"
        owner = getattr(err, "object_type", None)
        valid = (
            f"; valid keys there are {sorted(f.name for f in dataclasses.fields(owner))}"
            if dataclasses.is_dataclass(owner)
            else ""
        )
        raise ConfigError(f"{where}: unknown key{valid}") from None
    except OmegaConfBaseException as err:
        message = str(err).splitlines()[0]
        raise ConfigError(f"{group}.{getattr(err, 'full_key', '')}: {message}") from None


def _writable(node: DictConfig) -> DictConfig:
    """Frozen dataclasses give read-only nodes, which a merge could not fill in."""
    OmegaConf.set_readonly(node, None)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            _writable(child)
    return node


@dataclasses.dataclass
class Setup:
    """What a training run is made of, built from a config."""

    formulation: Formulation
    model: PoseModel
    trainer: TrainerConfig
    optim: OptimConfig
    data: DataConfig
    config: dict  # the resolved config, for the run directory


def _dataclass_from(cls, node: Any, group: str):
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{group}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    return cls(**values)


def _target_class(cfg: DictConfig, group: str) -> type:
    node = cfg.get(group)
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if not target:
        raise ConfigError(f"{group}: no _target_ (the class to build) in the '{group}' group")
    try:
        return hydra.utils.get_class(target)
    except Exception as err:  # noqa: BLE001 - import errors of any kind
        raise ConfigError(
            f"{group}._target_={target!r} cannot be imported ({_first_line(err)})"
        ) from None


def _check_target_keys(group: str, cls: type, node: dict, supplied: tuple[str, ...]) -> None:
    """Unknown keys of a ``_target_`` group fail here, naming the group, not deep in Hydra."""
    # __init__, not the class: module metaclasses hide the constructor's signature.
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(set(params) - set(supplied))
    for key in sorted(set(node) - {"_target_", "_partial_"}):
        if key in supplied:
            raise ConfigError(f"{group}.{key} is set at run time and cannot be configured")
        if key not in params:
            raise ConfigError(
                f"{group}.{key}: unknown key for {cls.__name__}; valid keys are {valid}"
            )


def _formulation_class(cfg: DictConfig):
    cls = _target_class(cfg, "formulation")
    target = cfg.formulation.get("_target_")
    if not (isinstance(cls, type) and issubclass(cls, Formulation)):
        raise ConfigError(f"formulation._target_={target!r} is not a posejax Formulation")
    if "input_mode" in cfg.formulation:
        raise ConfigError(
            f"formulation.input_mode cannot be set: {cls.__name__} is a {cls.input_mode} "
            "formulation by construction; choose a formulation with the input mode wanted "
            "(e.g. formulation=paf for bottom_up)"
        )
    return cls


def build_formulation(cfg: DictConfig, *, stride: int, input_size: tuple[int, int]) -> Formulation:
    node = OmegaConf.to_container(cfg.formulation, resolve=True)
    _check_target_keys("formulation", _formulation_class(cfg), node, ("stride", "input_size"))
    node.pop("_partial_", None)
    try:
        return hydra.utils.instantiate(node, stride=stride, input_size=tuple(input_size))
    except Exception as err:  # noqa: BLE001 - hydra wraps the constructor's error; say which group
        raise ConfigError(f"formulation: {_first_line(err)}") from err


def build_backbone(cfg: DictConfig, *, dtype, rngs: nnx.Rngs) -> nnx.Module:
    node = OmegaConf.to_container(cfg.backbone, resolve=True)
    _check_target_keys("backbone", _target_class(cfg, "backbone"), node, ("dtype", "rngs"))
    node.pop("_partial_", None)
    try:
        return hydra.utils.instantiate(node, dtype=dtype, rngs=rngs)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"backbone: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    """The constructor's own message, not Hydra's multi-line wrapper around it."""
    cause = err.__cause__ or err
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def _output_stride(cfg: DictConfig) -> int:
    stride = (
        cfg.backbone.get("output_stride") if isinstance(cfg.get("backbone"), DictConfig) else None
    )
    if not isinstance(stride, int) or isinstance(stride, bool) or stride <= 0:
        raise ConfigError(f"backbone.output_stride={stride!r}: expected a positive integer")
    return stride


def data_config(
    cfg: DictConfig, mode: str, *, batch_size: int, eval_batch_size: int, seed: int
) -> DataConfig:
    d = checked_group(cfg, "data", DataSchema)
    if mode not in INPUT_MODES:
        raise ConfigError(f"formulation input mode {mode!r} is not one of {INPUT_MODES}")
    mode_cfg = d[mode]
    if mode_cfg is None:
        raise ConfigError(f"data={d.builder} has no '{mode}' section, needed by this formulation")
    if OmegaConf.is_missing(mode_cfg, "input_size"):
        raise ConfigError(f"data.{mode}.input_size is not set")
    augment = _dataclass_from(AugmentConfig, d.augment, "data.augment")
    # Each mode reads only its own key: the crop margin (top-down, where M = 1) or the person
    # slots M (bottom-up, where nothing is cropped).
    if mode == TOP_DOWN:
        mode_keys = dict(margin=float(mode_cfg.margin))
    else:
        mode_keys = dict(max_people=int(mode_cfg.max_people))
    common = dict(
        mode=mode,
        input_size=tuple(mode_cfg.input_size),
        **mode_keys,
        num_workers=int(d.num_workers),
        seed=seed,
        min_keypoints=int(d.min_keypoints),
    )
    try:
        pipeline = PipelineConfig(augment=augment, batch_size=batch_size, **common)
    except ValueError as err:
        raise ConfigError(f"data.{mode} / trainer.batch_size: {err}") from None
    eval_pipeline = PipelineConfig(
        augment=dataclasses.replace(augment, enabled=False), batch_size=eval_batch_size, **common
    )
    if d.cache_mb < 0:
        raise ConfigError(f"data.cache_mb={d.cache_mb}: expected >= 0 (0 turns the cache off)")
    builder_kwargs = _plain(d.builder_kwargs)
    on_bad_example = _on_bad_example(cfg.data, builder_kwargs)
    if _builder_takes(d.builder, "on_bad_example"):
        builder_kwargs["on_bad_example"] = on_bad_example
    return DataConfig(
        builder=d.builder,
        config=d.config,
        config_overrides=_plain(d.config_overrides),
        data_dir=_absolute(d.data_dir),
        manual_dir=_absolute(d.manual_dir),
        train_split=d.train_split,
        eval_split=d.eval_split,
        builder_kwargs=builder_kwargs,
        cache_mb=int(d.cache_mb),
        pipeline=pipeline,
        eval_pipeline=eval_pipeline,
    )


ON_BAD_EXAMPLE = ("raise", "skip")


def _on_bad_example(node: DictConfig, builder_kwargs: dict) -> str:
    """``data.on_bad_example``; the older ``data.builder_kwargs.on_bad_example`` (saved configs
    of earlier runs) is accepted when the top-level key is absent or agrees."""
    legacy = builder_kwargs.pop("on_bad_example", None)
    value = node.get("on_bad_example", legacy or "raise")
    if legacy is not None and legacy != value:
        raise ConfigError(
            f"data.on_bad_example={value!r} and data.builder_kwargs.on_bad_example={legacy!r} "
            "disagree; set only data.on_bad_example"
        )
    if value not in ON_BAD_EXAMPLE:
        raise ConfigError(f"data.on_bad_example={value!r}: expected one of {ON_BAD_EXAMPLE}")
    return value


def _builder_takes(name: str, argument: str) -> bool:
    """Whether the registered TFDS builder ``name`` has a constructor argument ``argument``
    (``on_bad_example`` is a real-data builder option; the synthetic builder has no bad input)."""
    try:
        cls = tfds.builder_cls(name)
    except Exception:  # noqa: BLE001 - tfds raises several types for unknown names
        raise ConfigError(
            f"data.builder={name!r} is not a registered dataset; posejax's builders are "
            f"{_posejax_builders()}"
        ) from None
    return argument in inspect.signature(cls.__init__).parameters


def _posejax_builders() -> list[str]:
    found, stack = set(), [tfds.core.DatasetBuilder]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("posejax.") and not getattr(cls, "__abstractmethods__", ()):
            found.add(cls.name)
    return sorted(found)


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


def check_trainer(trainer: TrainerConfig) -> None:
    """Checks of the trainer group alone (positive counts, known choices)."""
    for name in ("steps", "batch_size", "log_every", "keep_checkpoints"):
        value = getattr(trainer, name)
        if value <= 0:
            raise ConfigError(f"trainer.{name}={value} must be positive")
    if trainer.eval_batch_size is not None and trainer.eval_batch_size <= 0:
        raise ConfigError(f"trainer.eval_batch_size={trainer.eval_batch_size} must be positive")
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


def validate(trainer: TrainerConfig, data: DataConfig, stride: int, num_devices: int) -> None:
    """Start-up checks: each failure is one sentence naming the keys involved."""
    check_trainer(trainer)
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


@dataclasses.dataclass(frozen=True)
class CheckedConfig:
    """The plain settings of a config that passed :func:`check_config`."""

    trainer: TrainerConfig
    optim: OptimConfig
    data: DataConfig
    formulation: Formulation
    stride: int


def check_config(cfg: DictConfig, *, num_devices: int | None = None) -> CheckedConfig:
    """Every start-up check that needs neither data nor a model; raises :class:`ConfigError`.

    Unknown keys and wrong types (schemas of the trainer, optim and data groups), unknown keys of
    the ``_target_`` groups, and incompatible combinations (:func:`validate`).
    """
    num_devices = num_devices or jax.device_count()
    trainer = _dataclass_from(
        TrainerConfig, checked_group(cfg, "trainer", TrainerConfig), "trainer"
    )
    optim = _dataclass_from(OptimConfig, checked_group(cfg, "optim", OptimConfig), "optim")
    check_trainer(trainer)
    try:
        build_optimizer(optim, trainer.steps)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    form_cls = _formulation_class(cfg)
    stride = _output_stride(cfg)
    backbone_node = OmegaConf.to_container(cfg.backbone, resolve=True)
    _check_target_keys("backbone", _target_class(cfg, "backbone"), backbone_node, ("dtype", "rngs"))
    data = data_config(
        cfg,
        form_cls.input_mode,
        batch_size=trainer.batch_size,
        eval_batch_size=trainer.eval_batch_size or trainer.batch_size,
        seed=trainer.seed,
    )
    validate(trainer, data, stride, num_devices)
    formulation = build_formulation(cfg, stride=stride, input_size=data.pipeline.input_size)
    return CheckedConfig(trainer, optim, data, formulation, stride)


def build_setup(cfg: DictConfig, *, num_devices: int | None = None) -> Setup:
    """Config -> formulation, model, and plain settings; raises ConfigError on bad combinations
    (:func:`check_config`, then the backbone's own checks), before any data is read."""
    checked = check_config(cfg, num_devices=num_devices)
    trainer = checked.trainer
    dtype = PRECISIONS[trainer.precision]
    rngs = nnx.Rngs(trainer.seed)
    backbone = build_backbone(cfg, dtype=dtype, rngs=rngs)
    head = checked.formulation.make_head(backbone.out_channels, rngs=rngs)
    model = PoseModel(backbone, head, dtype=dtype)
    return Setup(
        formulation=checked.formulation,
        model=model,
        trainer=trainer,
        optim=checked.optim,
        data=checked.data,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
