"""Helpers shared by the real-data TFDS builders (``coco_keypoints``, ``mpii_human_pose``, ``lsp``).

What lives here:

* the feature dictionary of :mod:`posejax.data.schema`, so every builder writes the same layout;
* image validation: the original bytes are passed through unchanged after checking that they
  are complete and that OpenCV decodes them exactly as ``tfds.data_source`` will
  (``cv2.IMREAD_UNCHANGED``, which ignores EXIF orientation, as TFDS does);
* bad-example accounting: a converter raises :class:`BadInput` (a reason code and a message that
  names the file / annotation and what was expected); :class:`BadExampleLog` either turns it into
  a :class:`BadExampleError` (``on_bad_example="raise"``) or drops the whole image and counts the
  reason (``"skip"``). Silent repairs (clipped boxes, derived areas, ...) are counted as *notes*.
  Both tallies are logged at the end of every split and stored in
  ``builder.info.metadata["bad_examples"]`` / ``["notes"]`` (``{split: {reason: count}}``).

Skipping drops the *image*, not just the bad person: a person left out of an image would be
trained as background by the bottom-up formulations.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds

from posejax.data import schema
from posejax.skeleton import NUM_KEYPOINTS

logger = logging.getLogger(__name__)

ON_BAD_EXAMPLE_CHOICES: tuple[str, ...] = ("raise", "skip")

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = b"\xff\xda"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class BadExampleError(ValueError):
    """An input file or annotation is not what the builder expects (``on_bad_example="raise"``)."""


class BadInput(Exception):
    """Raised by a converter for one image; ``reason`` is a short code used as counter key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_on_bad_example(value: str) -> str:
    if value not in ON_BAD_EXAMPLE_CHOICES:
        raise ValueError(f"on_bad_example must be one of {ON_BAD_EXAMPLE_CHOICES}, got {value!r}")
    return value


class BadExampleLog:
    """Per-split tally of rejected images (by reason) and silent repairs (notes)."""

    def __init__(self, dataset: str, split: str, policy: str):
        self.dataset = dataset
        self.split = split
        self.policy = check_on_bad_example(policy)
        self.rejected: collections.Counter[str] = collections.Counter()
        self.notes: collections.Counter[str] = collections.Counter()
        self.first_message: dict[str, str] = {}

    def reject(self, error: BadInput) -> None:
        """Raise :class:`BadExampleError` or count the rejection, depending on the policy."""
        if self.policy == "raise":
            raise BadExampleError(
                f"{self.dataset} ({self.split} split): {error.message} [reason: {error.reason}]. "
                "Fix the input, or build with on_bad_example='skip' to drop such images and "
                "count them."
            ) from error
        if error.reason not in self.first_message:
            self.first_message[error.reason] = error.message
            logger.warning("%s (%s): skipping: %s", self.dataset, self.split, error.message)
        self.rejected[error.reason] += 1

    def note(self, reason: str, count: int = 1) -> None:
        if count:
            self.notes[reason] += int(count)

    def finish(self, metadata: dict | None) -> None:
        """Log the tallies and store them in the dataset info's metadata."""
        rejected, notes = dict(sorted(self.rejected.items())), dict(sorted(self.notes.items()))
        if rejected:
            logger.warning(
                "%s (%s): skipped %d bad items (images or annotations) per reason: %s; "
                "first message per reason: %s",
                self.dataset,
                self.split,
                sum(rejected.values()),
                rejected,
                self.first_message,
            )
        logger.info("%s (%s): notes (repairs, derived values): %s", self.dataset, self.split, notes)
        if metadata is not None:
            metadata.setdefault("bad_examples", {})[self.split] = rejected
            metadata.setdefault("notes", {})[self.split] = notes


def generate_examples(
    *,
    dataset: str,
    split: str,
    policy: str,
    items: Iterable[tuple[str, Any]],
    convert: Callable[[Any, BadExampleLog], dict],
    metadata: dict | None,
    orphans: Sequence[BadInput] = (),
    notes: dict[str, int] | None = None,
) -> Iterator[tuple[str, dict]]:
    """Yield ``(key, example)`` for every item that converts; route failures through the log.

    ``orphans`` are problems found while indexing (e.g. an annotation of an unknown image) that
    belong to no yielded example; they are rejected (raised or counted) before the first example.
    ``notes`` are repairs counted while indexing.
    """
    log = BadExampleLog(dataset, split, policy)
    for reason, count in (notes or {}).items():
        log.note(reason, count)
    for orphan in orphans:
        log.reject(orphan)
    for key, item in items:
        try:
            example = convert(item, log)
        except BadInput as error:
            log.reject(error)
            continue
        yield key, example
    log.finish(metadata)


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


def person_features(
    *, native_keypoints: int | None = None, head_boxes: bool = False
) -> tfds.features.FeaturesDict:
    """The :mod:`posejax.data.schema` feature dictionary (``P`` people per image, ``P >= 0``)."""

    def tensor(*shape: int | None, dtype=np.float32) -> tfds.features.Tensor:
        return tfds.features.Tensor(shape=shape, dtype=dtype)

    features = {
        schema.IMAGE: tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        schema.IMAGE_ID: np.int64,
        schema.KEYPOINTS: tensor(None, NUM_KEYPOINTS, 3),
        schema.BOXES: tensor(None, 4),
        schema.AREA: tensor(None),
        schema.IGNORE: tensor(None, dtype=np.bool_),
    }
    if head_boxes:
        features[schema.HEAD_BOXES] = tensor(None, 4)
    if native_keypoints is not None:
        features[schema.NATIVE_KEYPOINTS] = tensor(None, native_keypoints, 3)
    return tfds.features.FeaturesDict(features)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    data: bytes  # what is stored: the original file bytes unless they had to be re-encoded
    height: int
    width: int


def _jpeg_is_complete(data: bytes) -> bool:
    # Entropy-coded data never contains FF D9 (0xFF bytes are stuffed as FF 00), so a complete
    # file has an end-of-image marker after its last start-of-scan marker. Trailing bytes after
    # the marker (some cameras append data) are allowed.
    last_scan = data.rfind(_JPEG_SOS)
    return last_scan >= 0 and data.rfind(_JPEG_EOI) > last_scan


def _png_is_complete(data: bytes) -> bool:
    return b"IEND" in data[-64:]


def read_image(path: os.PathLike | str, log: BadExampleLog, *, context: str = "") -> EncodedImage:
    """Read and validate one image file; raise :class:`BadInput` when it is missing or broken.

    Stored bytes are the file's own (no re-encoding) unless OpenCV would not return 3-channel
    uint8 (CMYK JPEG, RGBA or 16-bit PNG): those are re-encoded as JPEG (note ``reencoded_image``).
    """
    path = os.fspath(path)
    where = f"image file {path}" + (f" ({context})" if context else "")
    if not os.path.isfile(path):
        raise BadInput("missing_image", f"{where} does not exist")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise BadInput("unreadable_image", f"{where} is empty")
    if data.startswith(_JPEG_SOI) and not _jpeg_is_complete(data):
        raise BadInput(
            "truncated_image",
            f"{where} is truncated: its JPEG data ends without an end-of-image marker (FF D9) "
            "after the last scan",
        )
    if data.startswith(_PNG_SIGNATURE) and not _png_is_complete(data):
        raise BadInput("truncated_image", f"{where} is truncated: PNG without IEND chunk")
    buffer = np.frombuffer(data, np.uint8)
    decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise BadInput("unreadable_image", f"{where} cannot be decoded by OpenCV")
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    if channels not in (1, 3) or decoded.dtype != np.uint8:
        colour = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        ok, encoded = cv2.imencode(".jpg", colour, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if colour is None or not ok:
            raise BadInput("unreadable_image", f"{where}: cannot convert to 3-channel uint8")
        log.note("reencoded_image")
        data = encoded.tobytes()
    return EncodedImage(data=data, height=int(decoded.shape[0]), width=int(decoded.shape[1]))


def image_id_from_name(name: str) -> int:
    """Integer id of an image file name: its digits (``005808361.jpg`` -> 5808361,
    ``im00042.jpg`` -> 42), or, for names without digits, a stable 63-bit hash of the name."""
    stem = os.path.splitext(os.path.basename(name))[0]
    digits = re.sub(r"\D", "", stem)
    if digits and len(digits) <= 18:
        return int(digits)
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "little") & (2**63 - 1)


# ---------------------------------------------------------------------------------------------
# Keypoints and boxes
# ---------------------------------------------------------------------------------------------


def to_coco17(native: np.ndarray, coco_from_native: Sequence[int]) -> np.ndarray:
    """``(P, Kn, 3)`` native keypoints -> ``(P, 17, 3)`` COCO-17; index ``-1`` -> ``(0, 0, 0)``."""
    native = np.asarray(native, dtype=np.float32)
    out = np.zeros((native.shape[0], NUM_KEYPOINTS, 3), np.float32)
    for coco_index, native_index in enumerate(coco_from_native):
        if native_index >= 0:
            out[:, coco_index] = native[:, native_index]
    return out


def count_outside(keypoints: np.ndarray, width: int, height: int) -> int:
    """Labelled joints outside the image ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` (kept, counted)."""
    kp = np.asarray(keypoints).reshape(-1, 3)
    labelled = kp[:, 2] > 0
    x, y = kp[:, 0], kp[:, 1]
    outside = (x < -0.5) | (x > width - 0.5) | (y < -0.5) | (y > height - 0.5)
    return int(np.sum(labelled & outside))


def clip_box_xyxy(box: np.ndarray, lo: float, hi_x: float, hi_y: float) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array(
        [
            min(max(x0, lo), hi_x),
            min(max(y0, lo), hi_y),
            min(max(x1, lo), hi_x),
            min(max(y1, lo), hi_y),
        ]
    )


def joint_box(
    keypoints: np.ndarray, width: int, height: int, *, margin: float
) -> np.ndarray | None:
    """Box ``(x, y, w, h)`` around the labelled joints of one person, or None if fewer than 2.

    The hull of the labelled joints is grown by ``margin * max(hull w, hull h)`` on every side
    (joints sit inside the body: hands and feet extend past wrists and ankles) and clipped to
    the image ``[-0.5, W - 0.5] x [-0.5, H - 0.5]`` (posejax's pixel-centre convention).
    """
    kp = np.asarray(keypoints).reshape(-1, 3)
    xy = kp[kp[:, 2] > 0, :2]
    if len(xy) < 2:
        return None
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    pad = margin * max(x1 - x0, y1 - y0)
    box = clip_box_xyxy(
        np.array([x0 - pad, y0 - pad, x1 + pad, y1 + pad]), -0.5, width - 0.5, height - 0.5
    )
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return np.array([box[0], box[1], box[2] - box[0], box[3] - box[1]], np.float32)


def stack_people(
    people: Sequence[dict[str, np.ndarray]], keys_and_shapes: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Stack per-person arrays into ``(P, ...)`` arrays (``P`` may be 0)."""
    out = {}
    for key, shape in keys_and_shapes.items():
        dtype = np.bool_ if key == schema.IGNORE else np.float32
        if people:
            out[key] = np.stack([np.asarray(p[key], dtype) for p in people]).reshape(-1, *shape)
        else:
            out[key] = np.zeros((0, *shape), dtype)
    return out


def finite_array(values: Any, shape: tuple[int, ...], *, reason: str, what: str) -> np.ndarray:
    """``values`` as a float64 array of ``shape`` with finite entries, else :class:`BadInput`."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise BadInput(
            f"{reason}_not_numeric", f"{what}: expected numbers, got {values!r}"
        ) from None
    if array.shape != shape:
        raise BadInput(
            f"{reason}_wrong_shape", f"{what}: expected shape {shape}, got {array.shape}"
        )
    with np.errstate(over="ignore"):
        finite = np.isfinite(array.astype(np.float32))  # stored as float32
    if not np.all(finite):
        bad = np.argwhere(~finite).tolist()
        raise BadInput(
            f"{reason}_not_finite", f"{what}: NaN/inf (or beyond float32) at index {bad[:5]}"
        )
    return array
