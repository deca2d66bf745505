"""The real-dataset presets compose and pass the start-up checks (nothing is built or read)."""

from __future__ import annotations

import pathlib

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from posejax.runs.setup import check_config

CONF_DIR = pathlib.Path(__file__).resolve().parents[1] / "conf"


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def startup_checks(cfg):
    """What ``build_setup`` checks, without building the model: ``(trainer, data, formulation)``."""
    checked = check_config(cfg, num_devices=1)
    return checked.trainer, checked.data, checked.formulation


@pytest.mark.parametrize(
    ("data", "builder", "top_down", "bottom_up"),
    [
        ("coco", "coco_keypoints", (256, 192), (368, 368)),
        ("mpii", "mpii_human_pose", (256, 256), (368, 368)),
        ("lsp", "lsp", (256, 256), (256, 256)),
        ("coco_fixture", "coco_keypoints", (32, 24), (64, 64)),
        ("mpii_fixture", "mpii_human_pose", (32, 32), (64, 64)),
        ("lsp_fixture", "lsp", (32, 32), (64, 64)),
    ],
)
def test_data_presets(data, builder, top_down, bottom_up, monkeypatch):
    for name in ("POSEJAX_COCO_DIR", "POSEJAX_MPII_DIR", "POSEJAX_LSP_DIR"):
        monkeypatch.delenv(name, raising=False)
    cfg = composed(f"data={data}", "backbone=tiny")
    assert cfg.data.builder == builder
    assert tuple(cfg.data.top_down.input_size) == top_down
    assert tuple(cfg.data.bottom_up.input_size) == bottom_up
    manual_dir = OmegaConf.to_container(cfg.data, resolve=True)["manual_dir"]
    if data.endswith("_fixture"):
        assert manual_dir.endswith(("mmpose/coco", "mmpose/mpii", "lsp_cpm"))
        assert not cfg.data.data_dir.startswith("${")  # never the real dataset's data_dir
    else:
        assert manual_dir is None  # TFDS's default: <data_dir>/downloads/manual
    _, data_cfg, _ = startup_checks(cfg)  # heatmap: top-down
    assert data_cfg.pipeline.input_size == top_down


@pytest.mark.parametrize(
    ("experiment", "input_size", "builder"),
    [
        ("coco_topdown_heatmap", (256, 192), "coco_keypoints"),
        ("mpii_heatmap", (256, 256), "mpii_human_pose"),
        ("lsp_heatmap", (256, 256), "lsp"),
        ("coco_bottomup_paf", (368, 368), "coco_keypoints"),
    ],
)
def test_gpu_experiment_presets(experiment, input_size, builder):
    cfg = composed(f"experiment={experiment}")
    assert cfg.backbone.widths == [64, 128, 256, 512]  # resnet18
    trainer, data, formulation = startup_checks(cfg)
    assert data.builder == builder and data.pipeline.input_size == input_size
    assert formulation.map_size == (input_size[0] // 4, input_size[1] // 4)
    assert trainer.steps > 1000 and data.pipeline.num_workers > 0
