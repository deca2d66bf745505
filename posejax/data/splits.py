"""Open one split of a configured dataset: build it if needed, derive its builder config.

``data`` is duck-typed: anything with the fields of :class:`posejax.runs.setup.DataConfig`
(``builder``, ``config``, ``config_overrides``, ``data_dir``, ``manual_dir``,
``builder_kwargs``) works, so this package never imports the run set-up above it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

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
        return builder.as_data_source(split=split)
    skipped = tuple(
        key
        for key in schema.DENSE_LABEL_KEYS
        if key in builder.info.features and key not in set(needs)
    )
    decoders = {key: tfds.decode.SkipDecoding() for key in skipped}
    source = builder.as_data_source(split=split, decoders=decoders or None)
    return WithoutFeatures(source, skipped) if skipped else source


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
