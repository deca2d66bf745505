"""``python -m posejax.train [overrides]`` / ``posejax-train``: one training run with Hydra.

Examples::

    python -m posejax.train formulation=paf trainer.steps=3000
    python -m posejax.train -m formulation=regression,heatmap trainer.seed=0,1,2
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

import posejax.hydra_resolvers  # noqa: F401  (resolvers used by conf/)

log = logging.getLogger("posejax.train")


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def _main(cfg: DictConfig) -> float:
    from posejax.runs.directory import resolve_run_dir
    from posejax.runs.setup import ConfigError
    from posejax.train.loop import train

    # orbax logs every file it writes at INFO through absl; keep the console for our own lines.
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)
    run_dir = resolve_run_dir(cfg)
    try:
        metrics = train(cfg, run_dir)
    except ConfigError as err:  # one sentence, no traceback: the config, not the code, is wrong
        raise SystemExit(f"posejax: configuration error: {err}") from None
    log.info("final metrics: %s", {k: round(v, 4) for k, v in metrics.items() if "/" not in k})
    # The returned value is what Hydra sweepers optimise: OKS AP, box AP for a detector.
    return float(metrics.get("OKS_AP", metrics.get("box_AP", float("nan"))))


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
