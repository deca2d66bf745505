"""TFDS builder ``mpii_human_pose``: MPII Human Pose (manual download), two annotation formats.

Builder configs (pick one with ``tfds.builder("mpii_human_pose/json", ...)``):

* ``mat`` (default): the official ``mpii_human_pose_v1_u12_1.mat`` (``RELEASE`` struct, parsed
  with ``scipy.io.loadmat``). Builds split ``train`` from the images with ``img_train == 1``
  (test images carry no joints and are not built; note ``test_image_not_built``). Stores
  ``head_boxes`` from each person's ``x1, y1, x2, y2`` head rectangle for PCKh.
  The usual 2958-person validation subset (Tompson et al.) is not defined by the .mat (it comes
  with the HRNet/mmpose files: use the ``json`` config for it), and ``single_person`` (the
  rectangles of the single-person benchmark) is read but not used: every annotated person of a
  training image is stored.
* ``json``: the HRNet / mmpose JSON conversion (a list of records ``{image, center, scale,
  joints (16 x 2), joints_vis (16)}``), splits ``train`` and ``validation``. These files carry
  no head boxes, so there is no ``head_boxes`` key (nothing is derived silently): PCKh on this
  config must fall back to a head-size proxy computed by the evaluator from
  ``native_keypoints`` (e.g. the ``upper_neck``-``head_top`` distance, joints 8 and 9), and the
  evaluator must say so.

One example per image; every person of the image (records sharing ``image`` in the JSON, all
``annorect`` entries in the .mat) is grouped into it.

Coordinates: MPII is annotated in MATLAB's 1-based pixel coordinates. posejax puts pixel centres
at integers starting from 0, so every x, y (joints, ``objpos``/``center``, head box corners) is
shifted by -1. HRNet does the same; mmpose 1.x only shifts the centre.

Skeleton: MPII-16 -> COCO-17 (``COCO_FROM_MPII``)::

    COCO                MPII
    0-4 nose/eyes/ears  -- missing, stored as (0, 0, 0)
    5 left_shoulder     13 l_shoulder        6 right_shoulder  12 r_shoulder
    7 left_elbow        14 l_elbow           8 right_elbow     11 r_elbow
    9 left_wrist        15 l_wrist          10 right_wrist     10 r_wrist
    11 left_hip          3 l_hip            12 right_hip        2 r_hip
    13 left_knee         4 l_knee           14 right_knee       1 r_knee
    15 left_ankle        5 l_ankle          16 right_ankle      0 r_ankle
    (pelvis 6, thorax 7, upper_neck 8, head_top 9: only in native_keypoints)

``native_keypoints`` ``(P, 16, 3)`` holds all 16 MPII joints in MPII order with COCO-style
flags: 2 visible, 1 labelled but occluded (``is_visible == 0`` in the .mat), 0 missing as
``(0, 0, 0)``. The JSON files only say "annotated" (``joints_vis``), stored as 2; in the .mat
a point with an empty ``is_visible`` is stored as 2 (note ``visibility_unknown``).

Boxes: the hull of the labelled MPII joints (head top included) grown by ``BOX_MARGIN`` of its
larger side on each side and clipped to the image; people with fewer than 2 labelled joints get
the square of side ``200 * scale`` around ``objpos``/``center`` (MPII's ``scale`` is the person
height in units of 200 px), also clipped. ``area`` is the box area (MPII has no segmentation).
People with no labelled joint are ``ignore`` regions.

Bad examples (``on_bad_example``): wrong joint array shapes, NaN/inf coordinates, flags outside
{0, 1}, joint ids outside 0..15 or repeated, non-positive scale, missing / truncated images.

References:
  Andriluka et al., "2D Human Pose Estimation: New Benchmark and State of the Art Analysis",
  CVPR 2014.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from posejax.data import _builder_utils as bu
from posejax.data import schema
from posejax.skeleton import NUM_KEYPOINTS

MPII_JOINTS: tuple[str, ...] = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
)
NUM_MPII_JOINTS = len(MPII_JOINTS)
# COCO_FROM_MPII[k] = MPII joint stored as COCO keypoint k (-1: no MPII equivalent).
COCO_FROM_MPII: tuple[int, ...] = (-1, -1, -1, -1, -1, 13, 12, 14, 11, 15, 10, 3, 2, 4, 1, 5, 0)
BOX_MARGIN = 0.1
MATLAB_ORIGIN = 1.0  # subtracted from every MPII coordinate

MAT_FILE_CANDIDATES: tuple[str, ...] = (
    "mpii_human_pose_v1_u12_1.mat",
    "mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat",
)
JSON_FILE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "train": ("annotations/mpii_train.json", "annot/train.json"),
    "validation": ("annotations/mpii_val.json", "annot/valid.json"),
}
IMAGE_DIR = "images"

_INSTRUCTIONS = """\
Images (both configs): download mpii_human_pose_v1.tar.gz from
http://human-pose.mpi-inf.mpg.de/#download and unpack it so that the JPEGs are in
<manual_dir>/images/ (e.g. <manual_dir>/images/000001163.jpg).

Config "mat" (default): download mpii_human_pose_v1_u12_2.zip from the same page and put
mpii_human_pose_v1_u12_1.mat at <manual_dir>/mpii_human_pose_v1_u12_1.mat (or leave it in
<manual_dir>/mpii_human_pose_v1_u12_2/).

Config "json": put the mmpose files at <manual_dir>/annotations/mpii_train.json and
<manual_dir>/annotations/mpii_val.json (or HRNet's at <manual_dir>/annot/train.json and
<manual_dir>/annot/valid.json). Splits whose file is missing are not built.

Pass the directory with tfds.download.DownloadConfig(manual_dir=...). Other file names:
MpiiHumanPose(annotation_files={split: path relative to manual_dir}, image_dir=...).
"""


@dataclasses.dataclass
class MpiiConfig(tfds.core.BuilderConfig):
    annotation_format: str = "mat"  # "mat" | "json"


class MpiiHumanPose(tfds.core.GeneratorBasedBuilder):
    """MPII Human Pose, one example per image, MPII-16 converted to COCO-17 (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [
        MpiiConfig(
            name="mat",
            annotation_format="mat",
            description="Official mpii_human_pose_v1_u12_1.mat; train split; head boxes.",
        ),
        MpiiConfig(
            name="json",
            annotation_format="json",
            description="HRNet/mmpose JSON; train and validation splits; no head boxes.",
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "mat"

    def __init__(
        self,
        *,
        on_bad_example: str = "raise",
        annotation_files: Mapping[str, str] | None = None,
        image_dir: str = IMAGE_DIR,
        **kwargs: Any,
    ):
        """Args:
        on_bad_example: ``"raise"`` (default) or ``"skip"`` (drop the image, count the reason).
        annotation_files: split -> annotation file relative to the manual dir (json config), or
          ``{"train": path}`` for the .mat; default: the candidates listed in the module.
        image_dir: image folder relative to the manual dir.
        **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``, ``config``, ...).
        """
        self.on_bad_example = bu.check_on_bad_example(on_bad_example)
        self.annotation_files = dict(annotation_files) if annotation_files else None
        self.image_dir = image_dir
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._original_state.update(
            on_bad_example=on_bad_example, annotation_files=annotation_files, image_dir=image_dir
        )

    @property
    def _format(self) -> str:
        return self.builder_config.annotation_format

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "MPII Human Pose in the posejax layout (posejax.data.schema): COCO-17 keypoints "
                "converted from MPII-16, MPII's own joints in native_keypoints"
                + (", head boxes for PCKh." if self._format == "mat" else "; no head boxes.")
                + " Rejected images per reason: metadata['bad_examples']; repairs: "
                "metadata['notes']."
            ),
            features=bu.person_features(
                native_keypoints=NUM_MPII_JOINTS, head_boxes=self._format == "mat"
            ),
            homepage="http://human-pose.mpi-inf.mpg.de/",
            metadata=tfds.core.MetadataDict(
                native_keypoint_names=list(MPII_JOINTS),
                coco_from_native=list(COCO_FROM_MPII),
                head_size=(
                    "head_boxes (PCKh: 0.6 * diagonal)"
                    if self._format == "mat"
                    else "absent: use a documented proxy from native_keypoints"
                ),
            ),
        )

    def _annotation_paths(self, manual_dir) -> dict[str, Any]:
        if self.annotation_files:
            candidates = {split: (path,) for split, path in self.annotation_files.items()}
        elif self._format == "mat":
            candidates = {"train": MAT_FILE_CANDIDATES}
        else:
            candidates = JSON_FILE_CANDIDATES
        found = {}
        for split, paths in candidates.items():
            existing = [manual_dir / p for p in paths if (manual_dir / p).is_file()]
            if existing:
                found[split] = existing[0]
        if not found:
            expected = ", ".join(str(manual_dir / p) for ps in candidates.values() for p in ps)
            raise FileNotFoundError(
                f"mpii_human_pose/{self.builder_config.name}: no annotation file found; "
                f"expected one of: {expected}.\n{_INSTRUCTIONS}"
            )
        return found

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = dl_manager.manual_dir
        found = self._annotation_paths(manual_dir)
        image_dir = manual_dir / self.image_dir
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"mpii_human_pose: image folder {image_dir} does not exist.\n{_INSTRUCTIONS}"
            )
        self.info.metadata["on_bad_example"] = self.on_bad_example
        return {
            split: self._generate_examples(split, path, image_dir) for split, path in found.items()
        }

    def _generate_examples(self, split: str, annotation_path, image_dir):
        notes: collections.Counter[str] = collections.Counter()
        if self._format == "mat":
            images = _read_mat(os.fspath(annotation_path), notes)
        else:
            images = _read_json(os.fspath(annotation_path))
        yield from bu.generate_examples(
            dataset=f"{self.name}/{self.builder_config.name}",
            split=split,
            policy=self.on_bad_example,
            items=((name, (name, records)) for name, records in images.items()),
            convert=lambda item, log: self._convert_image(item, image_dir, log),
            metadata=self.info.metadata,
            notes=notes,
        )

    def _convert_image(self, item, image_dir, log: bu.BadExampleLog) -> dict:
        name, records = item
        parsed = [parse(log) for parse in records]  # joints are checked before the image is read
        encoded = bu.read_image(os.path.join(image_dir, name), log)
        people = []
        for person in parsed:
            converted = _finish_person(
                person, encoded.width, encoded.height, log, head_boxes=self._format == "mat"
            )
            if converted is not None:
                people.append(converted)
        if not people:
            log.note("image_without_people")
        shapes = {
            schema.KEYPOINTS: (NUM_KEYPOINTS, 3),
            schema.BOXES: (4,),
            schema.AREA: (),
            schema.IGNORE: (),
            schema.NATIVE_KEYPOINTS: (NUM_MPII_JOINTS, 3),
        }
        if self._format == "mat":
            shapes[schema.HEAD_BOXES] = (4,)
        return {
            schema.IMAGE: encoded.data,
            schema.IMAGE_ID: np.int64(bu.image_id_from_name(name)),
            **bu.stack_people(people, shapes),
        }


@dataclasses.dataclass
class _Person:
    """One MPII person in posejax coordinates (1-based shift already applied)."""

    native: np.ndarray  # (16, 3) x, y, COCO-style flag
    center: np.ndarray | None  # (2,)
    scale: float | None  # person height / 200 px
    head_box: np.ndarray | None  # (4,) x, y, w, h; None for the JSON format
    what: str


def _finish_person(
    person: _Person, width: int, height: int, log, *, head_boxes: bool
) -> dict | None:
    native = person.native.astype(np.float32)
    labelled = native[:, 2] > 0
    log.note("labelled_joint_outside_image", bu.count_outside(native, width, height))
    box = bu.joint_box(native, width, height, margin=BOX_MARGIN)
    if box is None and person.center is not None and person.scale is not None:
        side = 200.0 * person.scale
        x0, y0 = person.center - side / 2
        clipped = bu.clip_box_xyxy(
            np.array([x0, y0, x0 + side, y0 + side]), -0.5, width - 0.5, height - 0.5
        )
        if clipped[2] > clipped[0] and clipped[3] > clipped[1]:
            box = np.array(
                [clipped[0], clipped[1], clipped[2] - clipped[0], clipped[3] - clipped[1]],
                np.float32,
            )
            log.note("box_from_center_scale")
    if box is None:
        if labelled.any():
            raise bu.BadInput(
                "person_outside_image",
                f"{person.what}: cannot place a box in the {width}x{height} (WxH) image",
            )
        log.note("person_without_location")  # no joints, no objpos: nothing to store
        return None
    out = {
        schema.KEYPOINTS: bu.to_coco17(native[None], COCO_FROM_MPII)[0],
        schema.NATIVE_KEYPOINTS: native,
        schema.BOXES: box,
        schema.AREA: float(box[2] * box[3]),
        schema.IGNORE: not labelled.any(),
    }
    if head_boxes:
        if person.head_box is None:  # stored as zeros = unknown head size
            log.note("head_box_missing")
        out[schema.HEAD_BOXES] = (
            np.zeros(4, np.float32) if person.head_box is None else person.head_box
        )
    return out


# ---------------------------------------------------------------------------------------------
# HRNet / mmpose JSON
# ---------------------------------------------------------------------------------------------


def _read_json(path: str) -> dict[str, list]:
    """Image name -> list of deferred person parsers (in file order)."""
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise bu.BadExampleError(f"{path}: expected a list of person records")
    images: dict[str, list] = {}
    for index, record in enumerate(records):
        name = record.get("image") if isinstance(record, dict) else None
        if not isinstance(name, str) or not name:
            name = f"<record {index} without image name>"
        what = f"{os.path.basename(path)} record {index} (image {name})"
        images.setdefault(name, []).append(
            lambda log, record=record, what=what: _parse_json_person(record, what, log)
        )
    return images


def _parse_json_person(record: Any, what: str, log) -> _Person:
    if not isinstance(record, dict) or not isinstance(record.get("image"), str):
        raise bu.BadInput("bad_record", f"{what}: expected a dict with an 'image' name")
    for key in ("joints", "joints_vis"):
        if key not in record:
            raise bu.BadInput(f"missing_{key}", f"{what}: no '{key}'")
    joints = bu.finite_array(
        record["joints"], (NUM_MPII_JOINTS, 2), reason="joints", what=f"{what}: joints"
    )
    flags = record["joints_vis"]
    if not isinstance(flags, list) or len(flags) != NUM_MPII_JOINTS:
        raise bu.BadInput(
            "joints_vis_wrong_shape", f"{what}: expected {NUM_MPII_JOINTS} joints_vis flags"
        )
    if any(not isinstance(f, int | float) or f not in (0, 1) for f in flags):
        raise bu.BadInput("bad_visibility_flag", f"{what}: joints_vis must be 0/1, got {flags}")
    annotated = np.array([bool(f) for f in flags])
    native = np.zeros((NUM_MPII_JOINTS, 3))
    native[annotated, :2] = joints[annotated] - MATLAB_ORIGIN
    native[annotated, 2] = 2.0
    center, scale = _center_scale(record.get("center"), record.get("scale"), what)
    return _Person(native=native, center=center, scale=scale, head_box=None, what=what)


def _center_scale(center: Any, scale: Any, what: str) -> tuple[np.ndarray | None, float | None]:
    if center is None or scale is None:
        return None, None
    center = bu.finite_array(center, (2,), reason="center", what=f"{what}: center/objpos")
    scale = float(bu.finite_array(scale, (), reason="scale", what=f"{what}: scale"))
    if scale <= 0:
        raise bu.BadInput("bad_scale", f"{what}: scale must be > 0, got {scale}")
    return center - MATLAB_ORIGIN, scale


# ---------------------------------------------------------------------------------------------
# Official .mat (RELEASE struct)
# ---------------------------------------------------------------------------------------------


def _items(value: Any) -> list:
    """MATLAB struct array / cell / scalar struct loaded with squeeze_me -> Python list."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return (
            list(value.ravel()) if value.dtype == object else ([] if value.size == 0 else [value])
        )
    return [value]


def _field(struct: Any, name: str) -> Any:
    """A struct field; None when the field is absent or empty (MATLAB's [])."""
    value = getattr(struct, name, None)
    if isinstance(value, np.ndarray) and value.size == 0:
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _number(value: Any, what: str) -> float | None:
    """A MATLAB scalar (number, numeric string, 1-element array) as float; None when empty."""
    try:
        if value is None:
            return None
        if isinstance(value, str):
            return float(value) if value.strip() else None
        array = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise bu.BadInput("not_numeric", f"{what}: expected a number, got {value!r}") from None
    if array.size > 1:
        raise bu.BadInput("not_numeric", f"{what}: expected one number, got {array.tolist()}")
    return float(array[0]) if array.size == 1 else None


def _read_mat(path: str, notes: collections.Counter) -> dict[str, list]:
    """Training images of ``RELEASE`` -> list of deferred person parsers per image name."""
    mat = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    if "RELEASE" not in mat:
        raise bu.BadExampleError(f"{path}: expected a MATLAB variable RELEASE (MPII v1 format)")
    release = mat["RELEASE"]
    annolist = _items(_field(release, "annolist"))
    img_train = np.atleast_1d(np.asarray(_field(release, "img_train"))).ravel()
    if len(annolist) != len(img_train):
        raise bu.BadExampleError(
            f"{path}: RELEASE.annolist has {len(annolist)} entries but img_train has "
            f"{len(img_train)}"
        )
    images: dict[str, list] = {}
    for index, (anno, is_train) in enumerate(zip(annolist, img_train, strict=True)):
        if not is_train:
            notes["test_image_not_built"] += 1
            continue
        name = _field(_field(anno, "image"), "name")
        if not isinstance(name, str):
            name = f"<annolist({index + 1}) without image name>"
        if name in images:
            notes["duplicate_image_entry_merged"] += 1
        rects = _items(_field(anno, "annorect"))
        parsers = images.setdefault(name, [])
        for r, rect in enumerate(rects):
            what = f"{os.path.basename(path)} annolist({index + 1}).annorect({r + 1}) ({name})"
            parsers.append(lambda log, rect=rect, what=what: _parse_mat_person(rect, what, log))
    return images


def _visibility(value: Any, what: str, log) -> float:
    """MPII ``is_visible`` (1, 0, '1', '0' or empty) -> COCO flag 2, 1, or 2 when unknown."""
    flag = _number(value, what)
    if flag is None:
        log.note("visibility_unknown")
        return 2.0
    if flag not in (0.0, 1.0):
        raise bu.BadInput("bad_visibility_flag", f"{what}: is_visible must be 0, 1 or empty")
    return 2.0 if flag == 1.0 else 1.0


def _parse_mat_person(rect: Any, what: str, log) -> _Person:
    native = np.zeros((NUM_MPII_JOINTS, 3))
    for point in _items(_field(_field(rect, "annopoints"), "point")):
        joint_id = _number(_field(point, "id"), f"{what}: point id")
        if joint_id is None or joint_id != int(joint_id) or not 0 <= joint_id < NUM_MPII_JOINTS:
            raise bu.BadInput(
                "bad_joint_id", f"{what}: point id must be 0..{NUM_MPII_JOINTS - 1}, got {joint_id}"
            )
        joint_id = int(joint_id)
        if native[joint_id, 2] > 0:
            raise bu.BadInput("duplicate_joint_id", f"{what}: joint id {joint_id} appears twice")
        where = f"{what}: joint {joint_id} ({MPII_JOINTS[joint_id]})"
        x, y = _number(_field(point, "x"), where), _number(_field(point, "y"), where)
        if x is None or y is None or not np.isfinite([x, y]).all():
            raise bu.BadInput("joints_not_finite", f"{where} has coordinates ({x}, {y})")
        flag = _visibility(_field(point, "is_visible"), where, log)
        native[joint_id] = (x - MATLAB_ORIGIN, y - MATLAB_ORIGIN, flag)

    corners = [_number(_field(rect, k), f"{what}: head box {k}") for k in ("x1", "y1", "x2", "y2")]
    head_box = None
    if all(c is not None for c in corners):
        x1, y1, x2, y2 = bu.finite_array(corners, (4,), reason="head_box", what=f"{what}: x1..y2")
        if x2 <= x1 or y2 <= y1:
            raise bu.BadInput(
                "head_box_not_positive", f"{what}: head box x1..y2 = {corners} is empty"
            )
        head_box = np.array([x1 - MATLAB_ORIGIN, y1 - MATLAB_ORIGIN, x2 - x1, y2 - y1], np.float32)

    objpos = _field(rect, "objpos")
    center = None
    if objpos is not None:
        cx = _number(_field(objpos, "x"), f"{what}: objpos.x")
        cy = _number(_field(objpos, "y"), f"{what}: objpos.y")
        center = None if cx is None or cy is None else [cx, cy]
    center, scale = _center_scale(center, _number(_field(rect, "scale"), f"{what}: scale"), what)
    return _Person(native=native, center=center, scale=scale, head_box=head_box, what=what)
