"""Opening splits: dense label masks are decoded only for readers that need them."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
from hydra import compose, initialize_config_dir

from posejax.data import schema
from posejax.data.splits import open_split
from posejax.formulations.base import TOP_DOWN
from posejax.runs.setup import data_config

CONF_DIR = pathlib.Path(__file__).resolve().parents[2] / "conf"


def test_masks_not_needed_are_not_decoded_and_the_rest_is_unchanged(tmp_path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["data=synthetic_tiny", f"data.data_dir={tmp_path}"])
    data = data_config(cfg, TOP_DOWN, batch_size=2, eval_batch_size=2, seed=0)
    full = open_split(data, "validation")
    lean = open_split(data, "validation", needs=("image", "keypoints", "part_mask"))
    none = pickle.loads(pickle.dumps(open_split(data, "validation", needs=("image",))))
    assert len(full) == len(lean) == len(none) == 16
    for i in (0, 7):
        a, b, c = full[i], lean[i], none[i]
        assert set(schema.DENSE_LABEL_KEYS) <= set(a)
        assert schema.PART_MASK in b and schema.INSTANCE_MASK not in b
        assert not set(schema.DENSE_LABEL_KEYS) & set(c)
        for key in c:
            np.testing.assert_array_equal(a[key], c[key])
        np.testing.assert_array_equal(a[schema.PART_MASK], b[schema.PART_MASK])
