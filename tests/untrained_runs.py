"""Run directories of untrained tiny models, written the way the training loop writes them.

``config.json`` from the composed config and an orbax checkpoint of the initial ``TrainState``
are all ``restore_run`` reads, so inference code can be tested without training anything.
"""

from __future__ import annotations

import json
import pathlib

from hydra import compose, initialize_config_dir

CONF_DIR = pathlib.Path(__file__).resolve().parents[1] / "conf"


def write_untrained_run(run_dir: pathlib.Path, formulation: str) -> pathlib.Path:
    """A run directory with the initial parameters of a tiny model (what restore_run reads)."""
    from posejax.runs.checkpoint import Checkpointer
    from posejax.runs.optim import build_optimizer
    from posejax.runs.setup import build_setup
    from posejax.runs.state import ModelDef, init_state

    overrides = ["data=synthetic_tiny", "backbone=tiny", "trainer.steps=1"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"formulation={formulation}"])
    setup = build_setup(cfg)
    optimizer, _ = build_optimizer(setup.optim, setup.trainer.steps)
    state = init_state(ModelDef(setup.model).initial_params, optimizer, 1)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(setup.config, indent=2, default=str))
    checkpointer = Checkpointer(run_dir / "checkpoints")
    checkpointer.save(0, state, {})
    checkpointer.close()
    return run_dir
