"""Build a registered TFDS dataset once, offline; a no-op when it is already on disk.

Usage::

    python -m posejax.data.build synthetic_people --config multi --data-dir data

prints where the dataset was written and how long it took. From Python,
:func:`ensure_built` is what the trainer calls before opening a split with
``tfds.data_source``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import tensorflow_datasets as tfds

import posejax.data  # noqa: F401  (registers the builders)

log = logging.getLogger(__name__)


def ensure_built(
    name: str,
    *,
    data_dir: str | os.PathLike,
    config: str | tfds.core.BuilderConfig | None = None,
    manual_dir: str | os.PathLike | None = None,
    **builder_kwargs,
) -> tfds.core.DatasetBuilder:
    """Return the builder of ``name`` (and ``config``) in ``data_dir``, generating it if absent.

    Args:
      name: registered TFDS name, e.g. ``"synthetic_people"``.
      data_dir: root directory of the prepared datasets.
      config: builder config name (``"multi"``), a ``BuilderConfig`` instance, or None for the
        builder's default.
      manual_dir: folder holding manually downloaded files (COCO, MPII, LSP builders).
      **builder_kwargs: passed to the builder constructor (e.g. ``num_workers`` for
        ``synthetic_people``, ``on_bad_example`` for the real-data builders).

    Returns:
      The builder; its ``data_path`` holds the prepared files. Generation shows tqdm progress
      bars; an existing dataset (``dataset_info.json`` present) is reused without any work.
    """
    data_dir = os.fspath(data_dir)
    kwargs = dict(builder_kwargs)
    if config is not None:
        kwargs["config"] = config
    builder = tfds.builder(name, data_dir=data_dir, **kwargs)
    if builder.is_prepared():
        log.info("%s already prepared in %s", builder.info.full_name, builder.data_path)
        return builder
    log.info("preparing %s in %s", builder.info.full_name, builder.data_path)
    download_config = (
        tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)) if manual_dir else None
    )
    builder.download_and_prepare(file_format="array_record", download_config=download_config)
    return builder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m posejax.data.build",
        description="Build a TFDS dataset into a data directory (skipped if already built).",
    )
    parser.add_argument("name", help="registered dataset name, e.g. synthetic_people")
    parser.add_argument("--config", default=None, help="builder config, e.g. multi or single")
    parser.add_argument("--data-dir", default="data", help="root of the prepared datasets")
    parser.add_argument(
        "--manual-dir", default=None, help="folder with manually downloaded files (real datasets)"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="rendering processes (synthetic_people only; default: builder's choice)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    kwargs = {} if args.num_workers is None else {"num_workers": args.num_workers}
    start = time.perf_counter()
    builder = ensure_built(
        args.name, data_dir=args.data_dir, config=args.config, manual_dir=args.manual_dir, **kwargs
    )
    elapsed = time.perf_counter() - start
    splits = ", ".join(f"{k}={v.num_examples}" for k, v in sorted(builder.info.splits.items()))
    print(f"{builder.info.full_name}: {builder.data_path} ({splits}) in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
