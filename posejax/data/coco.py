"""TFDS builder ``coco_keypoints``: COCO 2017 person keypoints (manual download).

One example per image of the annotation file, in the layout of :mod:`posejax.data.schema`.
Images without people are included (``P = 0``; the pipeline decides whether to use them). No
optional keys: COCO's own joints *are* COCO-17, so no ``native_keypoints``, no ``head_boxes``.
Images are stored as their original JPEG bytes after validation; like ``tfds.data_source``,
validation decodes with ``cv2.IMREAD_UNCHANGED`` (EXIF orientation is not applied).

Skeleton: identity; all 17 COCO keypoints are present.

Conversion rules (every repair is counted in ``info.metadata["notes"][split]``):

* Keypoints are stored as annotated, in COCO's pixel frame, with no half-pixel shift: pycocotools
  evaluates predictions against exactly these numbers. Visibility flags may be integers
  (0, 1, 2), integral floats, or booleans (``True`` -> 2 labelled, ``False`` -> 0); anything else
  is a bad example. Unlabelled joints are zeroed to ``(0, 0, 0)`` (note
  ``unlabelled_joint_zeroed`` when the file had non-zero coordinates there). Labelled joints
  outside the image are kept (note ``labelled_joint_outside_image``).
* ``ignore``: ``iscrowd`` (bool or int) or no labelled keypoint (``num_keypoints == 0``). Such
  people are kept as ignore regions: the loss masks their box, the evaluator ignores them. The
  stored ``num_keypoints`` field is not trusted; it is recomputed from the flags (note
  ``num_keypoints_mismatch`` when they differ).
* Boxes ``[x, y, w, h]`` are clipped to the image rectangle ``[0, W] x [0, H]`` in which COCO
  draws them (hulls of polygon vertices; note ``box_clipped``). This is the one place where the
  pixel-centre convention's ``[-0.5, W - 0.5]`` is not applied: it would move thousands of
  border-touching boxes by half a pixel. A missing box is derived from the hull of the labelled
  keypoints (note ``box_from_keypoints``).
* ``area`` is COCO's segmentation area; when missing, null or 0 it is the (clipped) box area
  (note ``area_from_box``), which overestimates the segmentation area by roughly 2x.
* ``image_id`` is int64: ids above 2**32 are fine, above 2**63 - 1 are a bad example.
* Annotations whose ``category_id`` is not 1 (person) are dropped (note ``non_person_annotation``).

Bad examples (``on_bad_example="raise"`` names the file / annotation id; ``"skip"`` drops the
image and counts the reason): keypoint list of the wrong length, non-numeric or NaN/inf values,
visibility flags outside {0, 1, 2}, zero/negative box sizes, non-finite boxes, a box entirely
outside the image, negative area, missing / truncated / undecodable image files, image sizes
that disagree with the annotation file's ``width``/``height``, duplicate image ids, annotations
that reference an image not listed in ``images``.

Usage::

    builder = tfds.builder("coco_keypoints", data_dir=DATA_DIR, on_bad_example="skip")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/data/coco"))
    source = tfds.data_source("coco_keypoints", data_dir=DATA_DIR)["validation"]

The ``splits`` constructor option maps split names to ``(annotation json, image folder)`` paths
relative to the manual dir (default :data:`DEFAULT_SPLITS`); splits whose annotation file is
missing are not built, and an error lists the expected files when none exists.

References:
  Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from posejax.data import _builder_utils as bu
from posejax.data import schema
from posejax.skeleton import COCO_KEYPOINTS, NUM_KEYPOINTS

logger = logging.getLogger(__name__)

DEFAULT_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("annotations/person_keypoints_train2017.json", "train2017"),
    "validation": ("annotations/person_keypoints_val2017.json", "val2017"),
}
PERSON_CATEGORY_ID = 1
_INT64_MAX = 2**63 - 1

_INSTRUCTIONS = """\
Download from https://cocodataset.org/#download and unpack into the manual directory:

  annotations_trainval2017.zip -> <manual_dir>/annotations/person_keypoints_train2017.json
                                  <manual_dir>/annotations/person_keypoints_val2017.json
  train2017.zip                -> <manual_dir>/train2017/000000000009.jpg ...
  val2017.zip                  -> <manual_dir>/val2017/000000000139.jpg ...

Only the splits whose annotation file exists are built (e.g. val2017 alone is fine). Pass the
directory with tfds.download.DownloadConfig(manual_dir=...), or put it at
<data_dir>/downloads/manual/. Other file names: CocoKeypoints(splits={split: (json, image_dir)}).
"""


class CocoKeypoints(tfds.core.GeneratorBasedBuilder):
    """COCO 2017 person keypoints, one example per image, people grouped (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def __init__(
        self,
        *,
        on_bad_example: str = "raise",
        splits: Mapping[str, tuple[str, str]] | None = None,
        **kwargs: Any,
    ):
        """Args:
        on_bad_example: ``"raise"`` (default) or ``"skip"`` (drop the image, count the reason).
        splits: split name -> ``(annotation json, image folder)`` relative to the manual dir.
        **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``, ``file_format``..);
          the file format defaults to array_record.
        """
        self.on_bad_example = bu.check_on_bad_example(on_bad_example)
        self.split_files = dict(splits or DEFAULT_SPLITS)
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._original_state.update(on_bad_example=on_bad_example, splits=splits)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "COCO 2017 person keypoints in the posejax layout (posejax.data.schema). "
                "Rejected images per reason: metadata['bad_examples']; repairs: "
                "metadata['notes']."
            ),
            features=bu.person_features(),
            homepage="https://cocodataset.org/#keypoints-2017",
            metadata=tfds.core.MetadataDict(keypoint_names=list(COCO_KEYPOINTS)),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = dl_manager.manual_dir
        found = {
            split: (manual_dir / annotation, manual_dir / image_dir)
            for split, (annotation, image_dir) in self.split_files.items()
            if (manual_dir / annotation).is_file()
        }
        if not found:
            expected = ", ".join(str(manual_dir / a) for a, _ in self.split_files.values())
            raise FileNotFoundError(
                f"coco_keypoints: no annotation file found; expected at least one of: {expected}."
                f"\n{_INSTRUCTIONS}"
            )
        for split, (annotation, image_dir) in found.items():
            if not image_dir.is_dir():
                raise FileNotFoundError(
                    f"coco_keypoints ({split} split): image folder {image_dir} does not exist "
                    f"(annotation file {annotation} is there).\n{_INSTRUCTIONS}"
                )
        self.info.metadata["on_bad_example"] = self.on_bad_example
        return {
            split: self._generate_examples(split, annotation, image_dir)
            for split, (annotation, image_dir) in found.items()
        }

    def _generate_examples(self, split: str, annotation_path, image_dir):
        # A generator, so that each split's json is only loaded when TFDS reaches that split.
        with open(annotation_path, encoding="utf-8") as f:
            coco = json.load(f)
        items, orphans = _index(coco, os.fspath(annotation_path))
        del coco
        yield from bu.generate_examples(
            dataset=self.name,
            split=split,
            policy=self.on_bad_example,
            items=((str(image["id"]), (image, anns, image_dir)) for image, anns in items),
            convert=_convert_image,
            metadata=self.info.metadata,
            orphans=orphans,
        )


def _index(coco: dict, source: str) -> tuple[list[tuple[dict, list[dict]]], list[bu.BadInput]]:
    """Group annotations by image; problems that belong to no example go to ``orphans``."""
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise bu.BadExampleError(f"{source}: expected a list under '{key}'")
    images: dict[int, dict] = {}
    order: list[dict] = []
    orphans: list[bu.BadInput] = []
    for position, image in enumerate(coco["images"]):
        image_id = image.get("id") if isinstance(image, dict) else None
        if (
            isinstance(image_id, bool)
            or not isinstance(image_id, int)
            or not -_INT64_MAX <= image_id <= _INT64_MAX
        ):
            orphans.append(
                bu.BadInput(
                    "bad_image_id",
                    f"{source}: images[{position}] has id {image_id!r}; expected an int64",
                )
            )
            continue
        if image_id in images:
            orphans.append(
                bu.BadInput("duplicate_image_id", f"{source}: image id {image_id} is listed twice")
            )
            continue
        images[image_id] = image
        order.append(image)
    by_image: dict[int, list[dict]] = collections.defaultdict(list)
    for position, ann in enumerate(coco["annotations"]):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id not in images or isinstance(image_id, bool):
            ann_id = ann.get("id") if isinstance(ann, dict) else None
            orphans.append(
                bu.BadInput(
                    "annotation_without_image",
                    f"{source}: annotation id {ann_id} (annotations[{position}]) refers to "
                    f"image id {image_id!r}, which is not listed in 'images'",
                )
            )
            continue
        by_image[image_id].append(ann)
    return [(image, by_image.get(image["id"], [])) for image in order], orphans


def _convert_image(item, log: bu.BadExampleLog) -> dict:
    image, anns, image_dir = item
    file_name = image.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise bu.BadInput("missing_file_name", f"image id {image['id']} has no file_name")
    encoded = bu.read_image(
        os.path.join(image_dir, file_name), log, context=f"image id {image['id']}"
    )
    expected = (image.get("height"), image.get("width"))
    if expected != (None, None) and expected != (encoded.height, encoded.width):
        raise bu.BadInput(
            "image_size_mismatch",
            f"image file {file_name} (image id {image['id']}) decodes to "
            f"{encoded.height}x{encoded.width} (HxW), the annotation says "
            f"{expected[0]}x{expected[1]}",
        )
    people = []
    for ann in anns:
        if ann.get("category_id", PERSON_CATEGORY_ID) != PERSON_CATEGORY_ID:
            log.note("non_person_annotation")
            continue
        people.append(_convert_person(ann, file_name, encoded.width, encoded.height, log))
    return {
        schema.IMAGE: encoded.data,
        schema.IMAGE_ID: np.int64(image["id"]),
        **bu.stack_people(
            people,
            {
                schema.KEYPOINTS: (NUM_KEYPOINTS, 3),
                schema.BOXES: (4,),
                schema.AREA: (),
                schema.IGNORE: (),
            },
        ),
    }


def _flag(value: Any) -> float | None:
    """COCO visibility flag -> 0, 1 or 2 (None when invalid). Booleans: True -> 2, False -> 0."""
    if isinstance(value, bool):
        return 2.0 if value else 0.0
    if isinstance(value, int | float) and value in (0, 1, 2):
        return float(value)
    return None


def _convert_person(ann: dict, file_name: str, width: int, height: int, log) -> dict:
    what = f"annotation id {ann.get('id')} (image {file_name})"
    crowd = ann.get("iscrowd", 0)
    if not isinstance(crowd, bool | int):
        raise bu.BadInput("bad_iscrowd", f"{what}: iscrowd must be a bool or int, got {crowd!r}")

    raw = ann.get("keypoints")
    if raw is None and crowd:
        raw = [0] * (3 * NUM_KEYPOINTS)
    if not isinstance(raw, list):
        raise bu.BadInput("missing_keypoints", f"{what}: expected a 'keypoints' list, got {raw!r}")
    if len(raw) != 3 * NUM_KEYPOINTS:
        raise bu.BadInput(
            "keypoints_wrong_length",
            f"{what}: expected {3 * NUM_KEYPOINTS} keypoint values (17 x (x, y, v)), "
            f"got {len(raw)}",
        )
    flags = [_flag(v) for v in raw[2::3]]
    if any(f is None for f in flags):
        raise bu.BadInput(
            "bad_visibility_flag",
            f"{what}: visibility flags must be 0, 1, 2 or booleans, got {raw[2::3]}",
        )
    _check_numbers([v for i, v in enumerate(raw) if i % 3 != 2], "keypoint", f"{what}: keypoints")
    xy = bu.finite_array(
        [v for i, v in enumerate(raw) if i % 3 != 2],
        (2 * NUM_KEYPOINTS,),
        reason="keypoint",
        what=f"{what}: keypoint coordinates",
    ).reshape(NUM_KEYPOINTS, 2)
    keypoints = np.concatenate([xy, np.asarray(flags)[:, None]], axis=1)
    unlabelled = keypoints[:, 2] == 0
    log.note("unlabelled_joint_zeroed", int(np.sum(np.any(keypoints[unlabelled, :2] != 0, axis=1))))
    keypoints[unlabelled] = 0.0
    num_labelled = int(np.sum(~unlabelled))
    if "num_keypoints" in ann and ann["num_keypoints"] != num_labelled:
        log.note("num_keypoints_mismatch")
    log.note("labelled_joint_outside_image", bu.count_outside(keypoints, width, height))

    box = _person_box(ann, keypoints, what, width, height, log)
    area = ann.get("area")
    if area is None or (isinstance(area, int | float) and area == 0):
        area = float(box[2] * box[3])
        log.note("area_from_box")
    elif not _finite_number(area):
        raise bu.BadInput("bad_area", f"{what}: area must be a finite number, got {area!r}")
    elif area < 0:
        raise bu.BadInput("bad_area", f"{what}: area must be >= 0, got {area}")
    return {
        schema.KEYPOINTS: keypoints,
        schema.BOXES: box,
        schema.AREA: area,
        schema.IGNORE: bool(crowd) or num_labelled == 0,
    }


def _finite_number(value: Any) -> bool:
    """A JSON number that is finite as the float32 it is stored as."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        with np.errstate(over="ignore"):
            return bool(np.isfinite(np.float32(value)))
    except OverflowError:  # an int beyond float range
        return False


def _check_numbers(values: list, reason: str, what: str) -> None:
    """JSON numbers only: numpy would silently read ``true`` as 1 and ``"12.5"`` as 12.5."""
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        raise bu.BadInput(f"{reason}_not_numeric", f"{what}: expected numbers, got {bad[:3]!r}")


def _person_box(ann, keypoints, what, width, height, log) -> np.ndarray:
    raw = ann.get("bbox")
    if raw is None:
        labelled = keypoints[keypoints[:, 2] > 0, :2]
        if len(labelled) < 2:
            raise bu.BadInput(
                "missing_box", f"{what}: no bbox and fewer than 2 labelled keypoints to derive one"
            )
        log.note("box_from_keypoints")
        (x0, y0), (x1, y1) = labelled.min(axis=0), labelled.max(axis=0)
        raw = [x0, y0, max(x1 - x0, 1.0), max(y1 - y0, 1.0)]
    elif isinstance(raw, list):
        _check_numbers(raw, "box", f"{what}: bbox")
    x, y, w, h = bu.finite_array(raw, (4,), reason="box", what=f"{what}: bbox [x, y, w, h]")
    if w <= 0 or h <= 0:
        raise bu.BadInput(
            "box_not_positive", f"{what}: bbox width and height must be > 0, got {w} x {h}"
        )
    clipped = bu.clip_box_xyxy(np.array([x, y, x + w, y + h]), 0.0, float(width), float(height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise bu.BadInput(
            "box_outside_image",
            f"{what}: bbox {[x, y, w, h]} lies outside the {width}x{height} (WxH) image",
        )
    if not np.allclose(clipped, [x, y, x + w, y + h]):
        log.note("box_clipped")
    x0, y0, x1, y1 = clipped
    return np.array([x0, y0, x1 - x0, y1 - y0], np.float32)
