"""Open one split of a configured dataset: build it if needed, derive its builder config.

``data`` is duck-typed: anything with the fields of :class:`posejax.runs.setup.DataConfig`
(``builder``, ``config``, ``config_overrides``, ``data_dir``, ``manual_dir``,
``builder_kwargs``, ``cache_mb``) works, so this package never imports the run set-up above it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import sys
import threading
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from posejax.data import schema
from posejax.data.build import ensure_built

log = logging.getLogger(__name__)


def open_split(data, split: str, *, needs: Sequence[str] | None = None):
    """Build the dataset if needed and open one split as a random-access source.

    Images the builder skipped (``data.on_bad_example=skip``) are reported here too, so a run on
    a dataset built earlier still says how much was dropped and why.

    Args:
      data: the data settings (see the module docstring).
      split: split name.
      needs: the batch keys the reader will use (e.g. a formulation's ``batch_keys``). Dense
        label features (:data:`posejax.data.schema.DENSE_LABEL_KEYS`: part and instance masks)
        not among them are neither decoded nor returned: decoding two PNG masks costs about as
        much as the image itself. None: every feature, decoded.

    With ``data.cache_mb > 0`` the decoded examples are kept in memory up to that many MiB
    (:class:`DecodedCache`): a top-down epoch reads each image once per person in it, and the
    PNG decode is the largest cost of the input pipeline.
    """
    config = derived_builder_config(data.builder, data.config, data.config_overrides)
    builder = ensure_built(
        data.builder,
        data_dir=data.data_dir,
        config=config,
        manual_dir=data.manual_dir,
        **data.builder_kwargs,
    )
    _report_bad_examples(builder, split, data.builder_kwargs.get("on_bad_example"))
    if needs is None:
        return _cached(builder.as_data_source(split=split), data.cache_mb)
    skipped = tuple(
        key
        for key in schema.DENSE_LABEL_KEYS
        if key in builder.info.features and key not in set(needs)
    )
    decoders = {key: tfds.decode.SkipDecoding() for key in skipped}
    source = builder.as_data_source(split=split, decoders=decoders or None)
    return _cached(WithoutFeatures(source, skipped) if skipped else source, data.cache_mb)


def _cached(source: Sequence, cache_mb: int) -> Sequence:
    """``source`` behind a :class:`DecodedCache` of ``cache_mb`` MiB (validated with the config,
    ``posejax.runs.setup.data_config``); ``0`` (or less) leaves it as it is."""
    return DecodedCache(source, cache_mb * 2**20) if cache_mb > 0 else source


def _frozen(value):
    if isinstance(value, np.ndarray):
        value = value.view()  # the source's own array stays as it was
        value.flags.writeable = False
    return value


def _size(value) -> int:
    return value.nbytes if isinstance(value, np.ndarray) else sys.getsizeof(value)


class DecodedCache(Sequence):
    """A random-access source that keeps decoded examples in memory, least recently used out.

    Examples come back as new dicts of **read-only** arrays (a reader that wrote into a cached
    array would change every later read of it, so that raises instead). At most ``max_bytes``
    of array data are held; an example larger than that is returned and not kept. Thread-safe
    (grain's read threads, :func:`posejax.data.pipeline.person_index`). Pickled without its
    contents, so grain worker processes start with an empty cache of their own.
    """

    def __init__(self, source: Sequence, max_bytes: int):
        self.source = source
        self.max_bytes = int(max_bytes)
        self._init_cache()

    def _init_cache(self) -> None:
        self._entries: collections.OrderedDict[int, tuple[dict, int]] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i, n = int(i), len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a source of {n} examples")
        i %= n
        with self._lock:
            entry = self._entries.get(i)
            if entry is not None:
                self._entries.move_to_end(i)
                self.hits += 1
                return dict(entry[0])
            self.misses += 1
        example = {k: _frozen(v) for k, v in self.source[i].items()}
        size = sum(_size(v) for v in example.values())
        if size <= self.max_bytes:
            with self._lock:
                if i not in self._entries:
                    self._entries[i] = (example, size)
                    self._bytes += size
                    while self._bytes > self.max_bytes:
                        _, (_, dropped) = self._entries.popitem(last=False)
                        self._bytes -= dropped
        return dict(example)

    def warm(self, threads: int = 4) -> bool:
        """Decode every example now, in ``threads`` threads, if the whole source fits (judged by
        the first example's size); True if it did. A training stream reads every example once per
        epoch, so decoding them before the first step keeps the decode off the steps' cores."""
        n = len(self)
        if n == 0 or sum(_size(v) for v in self[0].values()) * n > self.max_bytes:
            return False
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(self.__getitem__, range(n)):
                pass
        return True

    def __getstate__(self):
        return {"source": self.source, "max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.source = state["source"]
        self.max_bytes = state["max_bytes"]
        self._init_cache()

    def __getattr__(self, name):  # dataset_info and friends of the wrapped source
        if name in ("source", "max_bytes", "_entries"):  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.source, name)


class WithoutFeatures(Sequence):
    """A random-access source whose examples lack some features (a view; nothing is copied)."""

    def __init__(self, source: Sequence, dropped: Sequence[str]):
        self.source = source
        self.dropped = tuple(dropped)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        example = self.source[i]
        return {k: v for k, v in example.items() if k not in self.dropped}

    def __getattr__(self, name):  # dataset_info and friends of the wrapped source
        if name in ("source", "dropped"):  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)


def _report_bad_examples(builder, split: str, requested: str | None) -> None:
    metadata = builder.info.metadata or {}
    built_with = metadata.get("on_bad_example")
    if requested is not None and built_with is not None and built_with != requested:
        log.warning(
            "%s was built with on_bad_example=%s, not %s as configured: delete %s to rebuild",
            builder.info.full_name,
            built_with,
            requested,
            builder.data_path,
        )
    skipped = (metadata.get("bad_examples") or {}).get(split) or {}
    if skipped:
        log.warning(
            "%s (%s split): %d images were skipped as bad input when the dataset was built, "
            "per reason: %s",
            builder.info.full_name,
            split,
            sum(skipped.values()),
            dict(skipped),
        )


def derived_builder_config(builder: str, base: str | None, overrides: dict | None):
    """``base`` config of ``builder`` with dataclass fields replaced (nested dicts recurse).

    ``overrides`` must include a new ``name``: TFDS keys prepared files by config name, so a
    changed config under an old name would silently reuse old files.
    """
    if not overrides:
        return base
    overrides = dict(overrides)
    if "name" not in overrides or overrides["name"] == base:
        raise ValueError(
            f"data.config_overrides for {builder}/{base} needs a new 'name' (TFDS stores prepared "
            "files by config name; reusing the base name would read stale files)"
        )
    cls = tfds.builder_cls(builder)
    configs = {c.name: c for c in cls.BUILDER_CONFIGS}
    if base not in configs:
        raise ValueError(f"data.config={base!r}: {builder} has configs {sorted(configs)}")
    return _replace_nested(configs[base], overrides, f"data.config_overrides ({builder})")


def _replace_nested(obj, overrides: dict, where: str):
    fields = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"{where}: unknown field {key!r}; valid fields are {sorted(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _replace_nested(current, value, f"{where}.{key}")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(obj, **changes)
