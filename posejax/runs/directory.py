"""Run directories: where a run writes, and how a finished run is rebuilt from one.

A run directory holds ``config.json`` (the resolved config the run was built from) and
``checkpoints/`` (orbax, :mod:`posejax.runs.checkpoint`); that is all the functions here read.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from posejax.runs.checkpoint import Checkpointer
from posejax.runs.setup import build_setup
from posejax.runs.state import ModelDef


def resolve_run_dir(cfg: DictConfig) -> Path:
    """``run_dir`` when the config sets one, else the Hydra job's output directory."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    return Path(HydraConfig.get().runtime.output_dir)


def run_setup(run_dir: str | Path, *, overrides: dict | None = None):
    """The :class:`Setup` of a run directory, from its saved ``config.json`` (with optional
    ``overrides`` merged in); needs no checkpoint."""
    from omegaconf import OmegaConf

    config_path = Path(run_dir).absolute() / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(
            f"{config_path} not found: is {config_path.parent} a posejax run directory?"
        )
    cfg = OmegaConf.create(json.loads(config_path.read_text()))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
    return build_setup(cfg)


def restore_run(run_dir: str | Path, *, overrides: dict | None = None):
    """Rebuild a finished (or interrupted) run from its directory.

    Returns ``(setup, model_def, params, step)``: the setup from its saved ``config.json`` (with
    optional ``overrides`` merged in, e.g. another eval split) and its newest parameters.
    """
    run_dir = Path(run_dir).absolute()
    setup = run_setup(run_dir, overrides=overrides)
    model_def = ModelDef(setup.model)
    checkpointer = Checkpointer(run_dir / "checkpoints")
    # No target: orbax returns the saved tree as nested dicts; only the parameters are needed.
    restored = checkpointer.restore_latest(None)
    checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"no readable checkpoint in {run_dir / 'checkpoints'}")
    step, state, _ = restored
    params = jax.tree.map(jnp.asarray, state["params"])
    return setup, model_def, params, step
