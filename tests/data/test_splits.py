"""Opening splits: dense label masks are decoded only for readers that need them, and decoded
examples are cached in memory."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from posejax.data import schema
from posejax.data.splits import DecodedCache, open_split
from posejax.formulations.base import TOP_DOWN
from posejax.runs.setup import ConfigError, data_config

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


def _tiny_data(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=["data=synthetic_tiny", f"data.data_dir={tmp_path}", *overrides]
        )
    return data_config(cfg, TOP_DOWN, batch_size=2, eval_batch_size=2, seed=0)


def test_decoded_cache_returns_what_the_source_does_once_decoded(tmp_path):
    cached = open_split(_tiny_data(tmp_path), "validation")
    plain = open_split(_tiny_data(tmp_path, "data.cache_mb=0"), "validation")
    assert isinstance(cached, DecodedCache) and not isinstance(plain, DecodedCache)
    first = [cached[i] for i in range(len(cached))]
    assert (cached.hits, cached.misses) == (0, 16)
    again = cached[-1]  # negative indices share the entry of their positive twin
    assert (cached.hits, cached.misses) == (1, 16)
    for i, example in enumerate([*first, again]):
        expected = plain[i if i < 16 else 15]
        assert set(example) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(example[key], expected[key])
    # Cached arrays are read-only: a reader writing into one would change every later read.
    with pytest.raises(ValueError, match="read-only"):
        again[schema.IMAGE][0, 0, 0] = 1
    again["extra"] = 1  # the dict itself is the reader's own
    assert "extra" not in cached[15]
    assert cached.dataset_info is not None  # attributes of the wrapped source pass through
    assert len(list(cached)) == 16  # iteration stops at the end (IndexError, not ValueError)
    with pytest.raises(IndexError):
        cached[16]


def test_decoded_cache_holds_at_most_its_bytes_and_pickles_empty(tmp_path):
    plain = open_split(_tiny_data(tmp_path, "data.cache_mb=0"), "validation")
    one = sum(v.nbytes for v in plain[0].values() if isinstance(v, np.ndarray))
    cache = DecodedCache(plain, max_bytes=int(2.5 * one))
    for i in (0, 1, 2, 0):
        cache[i]
    assert cache.misses == 4 and cache.hits == 0  # 0 was evicted by 2 (least recently used)
    assert 0 < cache.cached_bytes <= cache.max_bytes
    cache[0]
    assert cache.hits == 1
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.cached_bytes == 0 and copy.max_bytes == cache.max_bytes
    np.testing.assert_array_equal(copy[3][schema.IMAGE], plain[3][schema.IMAGE])
    assert (
        DecodedCache(plain, max_bytes=one // 2)[0]
        and DecodedCache(plain, one // 2).cached_bytes == 0
    )


def test_negative_cache_size_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.cache_mb=-1"):
        _tiny_data(tmp_path, "data.cache_mb=-1")


def test_warm_decodes_the_whole_source_when_it_fits(tmp_path):
    plain = open_split(_tiny_data(tmp_path, "data.cache_mb=0"), "validation")
    one = sum(v.nbytes for v in plain[0].values() if isinstance(v, np.ndarray))
    cache = DecodedCache(plain, max_bytes=100 * one)
    assert cache.warm()
    assert cache.misses == len(plain) and len(cache._entries) == len(plain)
    for i in range(len(plain)):
        cache[i]
    assert cache.misses == len(plain)  # every read after the warm-up is a hit
    small = DecodedCache(plain, max_bytes=3 * one)
    assert not small.warm() and small.cached_bytes <= 3 * one  # does not fit: only the probe read
