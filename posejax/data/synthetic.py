"""``synthetic_people``: the project's default dataset, rendered offline from a seed.

Images and labels come from :func:`posejax.data.render.render_scene` (see that module for what a
scene contains and the exact labelling rules). Two builder configs:

* ``multi`` (default): 1-6 people per 128x128 image, standing 50-110 % of the image height
  (so that most have a COCO "medium" or "large" OKS area, >= 32^2 visible pixels), partly
  outside the frame, overlapping in random depth order. Histograms of person height, area and
  people per image: ``docs/synthetic_people.md``.
* ``single``: exactly one person, centred and scaled so that the larger side of its box spans
  65-90 % of the image (so it never leaves the frame), with the same pose, rotation and facing
  variety.

Splits ``train`` / ``validation`` / ``test`` (8000 / 1000 / 1000 by default).

Determinism: example ``i`` of split ``s`` is rendered from
``numpy.random.default_rng([seed, crc32(s), i])``, so the same seed gives byte-identical
``array_record`` files regardless of the number of worker processes. ``image_id`` is the
example's index within its split.

Storage: ``array_record`` (random access through ``tfds.data_source``); the image and both masks
are PNG. Rendering runs in one ``spawn`` process pool shared by all splits (``num_workers``
builder argument, default ``min(2, cpu count)``; small datasets and daemonic processes render
in-process); workers return encoded PNG bytes.

A custom :class:`SyntheticPeopleConfig` (tests, ablations) must get its own ``name``: TFDS keys
the on-disk directory by config name and version only, so a changed config under an existing
name would silently reuse old files.

Building needs no TensorFlow: ``_info`` constructs ``DatasetInfo`` directly, and images are
handed to TFDS already encoded.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import zlib
from collections.abc import Iterator

import cv2
import numpy as np
import tensorflow_datasets as tfds
from tqdm.auto import tqdm

from posejax import skeleton
from posejax.data import schema
from posejax.data.render import SceneConfig, render_scene

_DESCRIPTION = __doc__
_SPLITS = ("train", "validation", "test")
_CHUNK = 32  # examples per worker task
_MIN_PARALLEL = 128  # splits smaller than this are rendered in-process


@dataclasses.dataclass(eq=False)
class SyntheticPeopleConfig(tfds.core.BuilderConfig):
    """A :class:`~posejax.data.render.SceneConfig` plus the seed and the split sizes."""

    scene: SceneConfig = dataclasses.field(default_factory=SceneConfig)
    seed: int = 0
    num_train: int = 8000
    num_validation: int = 1000
    num_test: int = 1000

    def split_sizes(self) -> dict[str, int]:
        return {
            "train": self.num_train,
            "validation": self.num_validation,
            "test": self.num_test,
        }


SINGLE = SyntheticPeopleConfig(
    name="single",
    description="One person, centred, its box spanning 65-90% of the image.",
    scene=SceneConfig(min_people=1, max_people=1, min_height=0.65, max_height=0.9, centred=True),
)
MULTI = SyntheticPeopleConfig(
    name="multi",
    description="1-6 people, 50-110% of the image height, overlapping, partly outside the frame.",
    scene=SceneConfig(),
)


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that renders example ``index`` of ``split`` (independent of everything
    else, which is what makes parallel generation deterministic)."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index)])


def _png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return data.tobytes()


def encode_example(scene: dict[str, np.ndarray], image_id: int) -> dict:
    """A rendered scene -> the feature dict TFDS stores (PNG bytes for image and masks)."""
    return {
        schema.IMAGE: _png(np.ascontiguousarray(scene[schema.IMAGE][..., ::-1])),  # RGB -> BGR
        schema.IMAGE_ID: np.int64(image_id),
        schema.KEYPOINTS: scene[schema.KEYPOINTS],
        schema.BOXES: scene[schema.BOXES],
        schema.AREA: scene[schema.AREA],
        schema.IGNORE: scene[schema.IGNORE],
        schema.PART_MASK: _png(scene[schema.PART_MASK][..., 0]),
        schema.INSTANCE_MASK: _png(scene[schema.INSTANCE_MASK][..., 0]),
    }


def _render_chunk(args: tuple[SceneConfig, int, str, int, int]) -> list[dict]:
    """Worker task: render and encode examples ``start .. stop - 1`` of a split."""
    scene_cfg, seed, split, start, stop = args
    return [
        encode_example(render_scene(example_rng(seed, split, i), scene_cfg), i)
        for i in range(start, stop)
    ]


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core: no nested OpenCV threads


class SyntheticPeople(tfds.core.GeneratorBasedBuilder):
    """Procedurally rendered people with COCO-17 keypoints, body-part and instance masks."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "2.0.0": "Default scenes: people 50-110 % of the image height (was 20-90 %).",
    }
    BUILDER_CONFIGS = [MULTI, SINGLE]
    DEFAULT_CONFIG_NAME = "multi"

    def __init__(self, *, num_workers: int | None = None, **kwargs):
        """Args: num_workers: rendering processes (default ``min(2, cpu count)``; 0 or 1 render
        in-process); other keyword arguments go to ``tfds.core.GeneratorBasedBuilder``, e.g.
        ``data_dir``, ``config`` (a name or a :class:`SyntheticPeopleConfig`)."""
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._num_workers = min(2, os.cpu_count() or 1) if num_workers is None else num_workers
        self._pool = None

    def _info(self) -> tfds.core.DatasetInfo:
        h, w = self.builder_config.scene.image_size
        tensor = tfds.features.Tensor
        features = tfds.features.FeaturesDict(
            {
                schema.IMAGE: tfds.features.Image(shape=(h, w, 3), encoding_format="png"),
                schema.IMAGE_ID: tfds.features.Scalar(dtype=np.int64),
                schema.KEYPOINTS: tensor(shape=(None, skeleton.NUM_KEYPOINTS, 3), dtype=np.float32),
                schema.BOXES: tensor(shape=(None, 4), dtype=np.float32),
                schema.AREA: tensor(shape=(None,), dtype=np.float32),
                schema.IGNORE: tensor(shape=(None,), dtype=np.bool_),
                schema.PART_MASK: tfds.features.Image(shape=(h, w, 1), encoding_format="png"),
                schema.INSTANCE_MASK: tfds.features.Image(shape=(h, w, 1), encoding_format="png"),
            }
        )
        # Constructed directly (not dataset_info_from_configs), which would look for metadata
        # files next to this module.
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTION,
            features=features,
            metadata=tfds.core.MetadataDict(
                scene=dataclasses.asdict(self.builder_config.scene),
                seed=self.builder_config.seed,
            ),
        )

    def _download_and_prepare(self, dl_manager, download_config):
        # One worker pool for all splits: spawning workers (which import TFDS) costs seconds.
        total = sum(self.builder_config.split_sizes().values())
        parallel = (
            self._num_workers > 1
            and total >= _MIN_PARALLEL
            and not multiprocessing.current_process().daemon  # daemons cannot have children
        )
        if not parallel:
            return super()._download_and_prepare(dl_manager, download_config)
        context = multiprocessing.get_context("spawn")
        with context.Pool(self._num_workers, initializer=_worker_init) as pool:
            self._pool = pool
            try:
                return super()._download_and_prepare(dl_manager, download_config)
            finally:
                self._pool = None

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {
            split: self._generate_examples(split, n)
            for split, n in self.builder_config.split_sizes().items()
            if n > 0
        }

    def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
        cfg = self.builder_config
        tasks = [
            (cfg.scene, cfg.seed, split, start, min(start + _CHUNK, num_examples))
            for start in range(0, num_examples, _CHUNK)
        ]
        pool = getattr(self, "_pool", None)
        # imap keeps task order; each example has its own generator, so the output does not
        # depend on how the work is split.
        chunks = pool.imap(_render_chunk, tasks) if pool is not None else map(_render_chunk, tasks)
        with tqdm(total=num_examples, desc=f"Rendering {cfg.name}/{split}", unit=" images") as bar:
            for chunk in chunks:
                for example in chunk:
                    yield int(example[schema.IMAGE_ID]), example
                bar.update(len(chunk))
