"""Bad configs fail at start-up with one clear sentence naming the key, before any data is read.

Group values (``formulation=foo``) are Hydra's to check; keys and types of the trainer, optim
and data groups are checked against the schemas of ``posejax.runs.setup``; the free-form
``_target_`` groups (backbone, formulation) against their target's constructor; combinations
by ``validate``. Everything here runs ``build_setup`` only (no dataset, no compilation).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import open_dict

from posejax.runs.setup import ConfigError, build_setup, check_config

CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "conf"
TINY = ["backbone=tiny", "data=synthetic_tiny"]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def setup_error(*overrides: str, num_devices: int = 1) -> str:
    with pytest.raises(ConfigError) as info:
        build_setup(composed(*TINY, *overrides), num_devices=num_devices)
    message = str(info.value)
    assert "\n" not in message, message  # one sentence, not a stack of wrapped errors
    return message


@pytest.mark.parametrize(
    "group, value, choices",
    [
        ("formulation", "deeppose", ["heatmap", "paf", "regression", "segmentation"]),
        ("backbone", "resnet152", ["resnet18", "small", "tiny"]),
        ("data", "imagenet", ["coco", "synthetic", "synthetic_tiny"]),
        ("optim", "lamb", ["adamw", "sgd"]),
    ],
)
def test_unknown_group_value_lists_the_valid_choices(group, value, choices):
    with pytest.raises(MissingConfigException) as info:
        composed(f"{group}={value}")
    message = str(info.value)
    assert f"Could not find '{group}/{value}'" in message
    for choice in choices:
        assert f"\t{choice}\n" in message + "\n"


def test_misspelt_key_on_the_command_line_is_named_by_hydra():
    with pytest.raises(ConfigCompositionException) as info:
        composed(*TINY, "trainer.stpes=5")
    assert "trainer.stpes" in str(info.value)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("+trainer.stpes=5", r"^trainer\.stpes: unknown key; valid keys there are \[.*'steps'"),
        ("+optim.learning_rate=0.1", r"^optim\.learning_rate: unknown key.*'lr'"),
        ("+data.mode=bottom_up", r"^data\.mode: unknown key.*'bottom_up'"),
        ("+data.top_down.input_sise=[8,8]", r"^data\.top_down\.input_sise: unknown.*'input_size'"),
        ("+data.top_down.max_people=3", r"^data\.top_down\.max_people: unknown.*'margin'\]"),
        ("+data.bottom_up.margin=1.5", r"^data\.bottom_up\.margin: unknown.*'max_people'\]"),
        ("+data.augment.flip=0.5", r"^data\.augment\.flip: unknown key.*'flip_prob'"),
        ("trainer.steps=many", r"^trainer\.steps: Value 'many' .* Integer"),
        ("trainer.precision=fp16", r"^trainer\.precision='fp16': expected one of \['bf16', 'fp32"),
        ("trainer.on_nonfinite=ignore", r"^trainer\.on_nonfinite='ignore': expected 'stop' or"),
        ("data.augment.scale_range=[0.5,big]", r"^data\.augment\.scale_range\[1\]: .*Float"),
        ("data.on_bad_example=ignore", r"^data\.on_bad_example='ignore': expected one of"),
        ("data.builder=imagenet_typo", r"^data\.builder='imagenet_typo' is not .*synthetic_people"),
        ("optim.name=adam", r"^optim\.name='adam': expected one of 'adamw', 'sgd'"),
        ("optim.schedule=linear", r"^optim\.schedule='linear'"),
        ("+formulation.sgima=2", r"^formulation\.sgima: unknown key for GaussianHeatmap.*'sigma'"),
        ("+backbone.widht=8", r"^backbone\.widht: unknown key for ResNetBackbone.*'widths'"),
        ("+formulation.name=gauss", r"^formulation\.name: unknown key for GaussianHeatmap"),
        ("+formulation.stride=8", r"^formulation\.stride is set at run time"),
        ("formulation._target_=posejax.nowhere.Heatmap", r"^formulation\._target_=.*cannot be"),
        (
            "formulation=paf formulation.parsing.matcher=hungarian",
            r"^formulation: matcher must be one of",
        ),
        ("formulation._target_=posejax.models.ResNetBackbone", r"is not a posejax Formulation"),
        ("backbone.output_stride=0", r"^backbone\.output_stride=0: expected a positive integer"),
    ],
)
def test_bad_key_or_value_names_it(override, expected):
    assert re.search(expected, setup_error(*override.split()))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        # A single-person formulation forced into bottom-up mode.
        (["+formulation.input_mode=bottom_up"], r"GaussianHeatmap is a top_down formulation"),
        (
            ["formulation=regression", "+formulation.input_mode=bottom_up"],
            r"CoordinateRegression is a top_down formulation",
        ),
        # Input size vs output stride, in the mode the formulation uses.
        (["data.top_down.input_size=[30,24]"], r"input size 30x24 \(data\.top_down\.input_size\)"),
        (["formulation=paf", "data.bottom_up.input_size=[64,66]"], r"64x66 \(data\.bottom_up"),
        (["backbone.output_stride=8", "data.top_down.input_size=[36,24]"], r"36x24 .* stride 8"),
        (["backbone.output_stride=2"], r"^backbone: backbone\.output_stride=2 is not reachable"),
        # Cadences.
        (["trainer.log_every=0"], r"trainer\.log_every=0 must be positive"),
        (["trainer.log_every=5", "trainer.eval_every=12"], r"eval_every=12 must be a positive"),
        (["trainer.checkpoint_every=7", "trainer.log_every=5"], r"checkpoint_every=7"),
        (["trainer.batch_size=0"], r"trainer\.batch_size=0 must be positive"),
        (["trainer.keep_checkpoints=0"], r"keep_checkpoints=0 must be positive"),
        # Bad data sections.
        (["~data.top_down"], r"data=synthetic_people has no 'top_down' section"),
        (["data.bottom_up.max_people=0", "formulation=paf"], r"max_people must be positive"),
    ],
)
def test_incompatible_combination_fails_at_start_up(overrides, expected):
    assert re.search(expected, setup_error(*overrides))


def test_batch_not_divisible_by_the_devices():
    message = setup_error("trainer.batch_size=8", num_devices=3)
    assert message == (
        "trainer.batch_size=8 is not divisible by the 3 devices in use; choose a multiple of 3"
    )
    message = setup_error("trainer.batch_size=6", "trainer.eval_batch_size=4", num_devices=3)
    assert message.startswith("trainer.eval_batch_size=4 is not divisible by the 3 devices")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes_the_schemas(experiment):
    # Only the start-up checks run (no model is built, no data read).
    check_config(composed(f"experiment={experiment}"), num_devices=1)


@pytest.mark.parametrize("data", DATA)
def test_every_data_preset_documents_on_bad_example(data):
    text = (CONF_DIR / "data" / f"{data}.yaml").read_text()
    inherited = "defaults:" in text
    assert inherited or "\non_bad_example:" in text
    assert "builder_kwargs:\n  on_bad_example" not in text  # the top-level key, not the kwarg


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data=synthetic_tiny"], None),  # synthetic_people takes no on_bad_example
        (["data=coco_fixture"], "raise"),
        (["data=coco_fixture", "data.on_bad_example=skip"], "skip"),
        (["data=coco"], "skip"),
        (["data=mpii_fixture"], "raise"),
        (["data=lsp"], "skip"),
    ],
)
def test_on_bad_example_is_passed_to_builders_that_take_it(overrides, expected):
    setup = check_config(composed("backbone=tiny", *overrides), num_devices=1)
    assert setup.data.builder_kwargs.get("on_bad_example") == expected


def test_saved_configs_with_the_old_builder_kwarg_still_load():
    cfg = composed(*TINY, "data=coco_fixture", "~data.on_bad_example")
    with open_dict(cfg):
        cfg.data.builder_kwargs.on_bad_example = "skip"  # as in config.json of earlier runs
    assert check_config(cfg, num_devices=1).data.builder_kwargs["on_bad_example"] == "skip"
    with open_dict(cfg):
        cfg.data.on_bad_example = "raise"
    with pytest.raises(ConfigError, match="disagree"):
        check_config(cfg, num_devices=1)


def test_the_command_line_fails_before_reading_data(tmp_path):
    command = [
        sys.executable,
        "-m",
        "posejax.train",
        *TINY,
        "formulation=paf",
        "data.bottom_up.input_size=[66,64]",
        f"data.data_dir={tmp_path / 'data'}",
        f"run_dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(command, cwd=CONF_DIR.parent, env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert (
        "posejax: configuration error: input size 66x64 (data.bottom_up.input_size) is not "
        "divisible by the backbone's output stride 4 (backbone.output_stride)"
    ) in done.stderr
    assert "Traceback" not in done.stderr  # one sentence, not a stack
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
