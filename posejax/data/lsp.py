"""TFDS builder ``lsp``: Leeds Sports Pose and LSP-extended (manual download).

Both releases ship a ``joints.mat`` (variable ``joints``) and an ``images/`` folder; one
annotated person per image (other people in the image are not annotated, so bottom-up training
on LSP sees them as background). The release is detected from the array layout:

=============  ===============  ==========================  ================================
release        ``joints``       third row / column          stored as
=============  ===============  ==========================  ================================
LSP (2,000)    ``3 x 14 x N``   1 = occluded, 0 = visible   v = 1 (labelled, occluded) / v = 2
LSPet (10k)    ``14 x 3 x N``   1 = visible, 0 = not        v = 2 / unlabelled ``(0, 0, 0)``
=============  ===============  ==========================  ================================

LSP annotates every joint (occluded ones at their estimated position), hence the flag only
says "occluded". In LSPet a 0 flag marks a joint without a usable position: in the 50-image
fixture 83 of the 84 such joints lie outside the image, some at (0, -26), so they are stored as
not labelled. ``visibility="one_is_visible"`` / ``"one_is_occluded"`` overrides the detection.

Coordinates: the releases are MATLAB files whose pixel coordinates are assumed to be 1-based
(like MPII's; neither release states it). posejax puts pixel centres at integers from 0, so
x, y are shifted by -1 (``one_based=False`` keeps them as stored).

Images: ``images/im%04d.jpg`` (LSP) or ``images/im%05d.jpg`` (LSPet); entry ``i`` (0-based) is
image number ``i + 1`` and ``image_id = i + 1``; both spellings are tried.

Skeleton: LSP-14 -> COCO-17 (``COCO_FROM_LSP``)::

    COCO                LSP
    0-4 nose/eyes/ears  -- missing, stored as (0, 0, 0)
    5 left_shoulder      9 l_shoulder        6 right_shoulder   8 r_shoulder
    7 left_elbow        10 l_elbow           8 right_elbow      7 r_elbow
    9 left_wrist        11 l_wrist          10 right_wrist      6 r_wrist
    11 left_hip          3 l_hip            12 right_hip        2 r_hip
    13 left_knee         4 l_knee           14 right_knee       1 r_knee
    15 left_ankle        5 l_ankle          16 right_ankle      0 r_ankle
    (neck 12 and head_top 13: no COCO equivalent, only in native_keypoints)

``native_keypoints`` ``(1, 14, 3)`` holds the 14 LSP joints with the same COCO-style flags.

Box: the hull of the labelled joints (head top included) grown by ``BOX_MARGIN`` of its larger
side on every side, clipped to the image ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``; ``area`` is the
box area. A person with fewer than 2 labelled joints becomes an ``ignore`` region covering the
whole image (note ``person_without_joints``).

Splits (``split_rule``):

* ``"auto"`` (default): ``"standard"`` for a 3 x 14 x 2000 LSP file, ``"all_train"`` for a
  14 x 3 x 10000 LSPet file (LSPet is a training set), ``"halves"`` otherwise (partial files,
  such as the 50-image test fixture);
* ``"standard"``: LSP's split, first 1000 images ``train``, last 1000 ``test``;
* ``"halves"``: first ``ceil(N / 2)`` images ``train``, the rest ``test``;
* ``"all_train"`` / ``"all_test"``: everything in one split.

``num_images`` keeps only the first entries of ``joints.mat`` (for partial downloads: the
fixture's ``joints.mat`` has 400 entries but only images 1-50); ``N`` above is counted after it.
Options change the content, so build each variant into its own ``data_dir``.

Bad examples (``on_bad_example``): NaN/inf coordinates of labelled joints, flags outside {0, 1},
missing / truncated / undecodable images.

References:
  Johnson and Everingham, "Clustered Pose and Nonlinear Appearance Models for Human Pose
  Estimation", BMVC 2010 (LSP); "Learning Effective Human Pose Estimation from Inaccurate
  Annotation", CVPR 2011 (LSPet).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from posejax.data import _builder_utils as bu
from posejax.data import schema
from posejax.skeleton import NUM_KEYPOINTS

LSP_JOINTS: tuple[str, ...] = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "neck",
    "head_top",
)
NUM_LSP_JOINTS = len(LSP_JOINTS)
# COCO_FROM_LSP[k] = LSP joint stored as COCO keypoint k (-1: no LSP equivalent).
COCO_FROM_LSP: tuple[int, ...] = (-1, -1, -1, -1, -1, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0)
BOX_MARGIN = 0.1
SPLIT_RULES: tuple[str, ...] = ("auto", "standard", "halves", "all_train", "all_test")
VISIBILITY_CONVENTIONS: tuple[str, ...] = ("auto", "one_is_visible", "one_is_occluded")
JOINTS_FILE = "joints.mat"
IMAGE_DIR = "images"

_INSTRUCTIONS = """\
LSP: download lsp_dataset.zip (http://sam.johnson.io/research/lsp.html); LSP-extended: download
lspet_dataset.zip (http://sam.johnson.io/research/lspet.html). Unpack ONE of them so that the
manual directory holds

  <manual_dir>/joints.mat
  <manual_dir>/images/im0001.jpg ...   (LSP)   or   <manual_dir>/images/im00001.jpg ... (LSPet)

and pass it with tfds.download.DownloadConfig(manual_dir=...). To build both releases, use two
data_dir values (the builder's name is the same).
"""


class Lsp(tfds.core.GeneratorBasedBuilder):
    """LSP / LSPet, one person per image, LSP-14 converted to COCO-17 (manual download)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

    def __init__(
        self,
        *,
        on_bad_example: str = "raise",
        split_rule: str = "auto",
        num_images: int | None = None,
        visibility: str = "auto",
        one_based: bool = True,
        **kwargs: Any,
    ):
        """Args:
        on_bad_example: ``"raise"`` (default) or ``"skip"`` (drop the image, count the reason).
        split_rule: one of ``SPLIT_RULES`` (see the module docstring).
        num_images: use only the first ``num_images`` entries of ``joints.mat``.
        visibility: one of ``VISIBILITY_CONVENTIONS``; ``"auto"`` follows the layout.
        one_based: subtract 1 from the stored coordinates (MATLAB -> posejax pixel centres).
        **kwargs: passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``, ...).
        """
        if split_rule not in SPLIT_RULES:
            raise ValueError(f"split_rule must be one of {SPLIT_RULES}, got {split_rule!r}")
        if visibility not in VISIBILITY_CONVENTIONS:
            raise ValueError(
                f"visibility must be one of {VISIBILITY_CONVENTIONS}, got {visibility!r}"
            )
        if num_images is not None and num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        self.on_bad_example = bu.check_on_bad_example(on_bad_example)
        self.split_rule = split_rule
        self.num_images = num_images
        self.visibility = visibility
        self.one_based = one_based
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
        self._original_state.update(
            on_bad_example=on_bad_example,
            split_rule=split_rule,
            num_images=num_images,
            visibility=visibility,
            one_based=one_based,
        )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Leeds Sports Pose (LSP) or LSP-extended in the posejax layout "
                "(posejax.data.schema): COCO-17 keypoints converted from LSP-14, the 14 LSP "
                "joints in native_keypoints. Release, split rule and visibility convention: "
                "metadata; rejected images per reason: metadata['bad_examples']; repairs: "
                "metadata['notes']."
            ),
            features=bu.person_features(native_keypoints=NUM_LSP_JOINTS),
            homepage="http://sam.johnson.io/research/lsp.html",
            metadata=tfds.core.MetadataDict(
                native_keypoint_names=list(LSP_JOINTS), coco_from_native=list(COCO_FROM_LSP)
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = dl_manager.manual_dir
        joints_path = manual_dir / JOINTS_FILE
        if not joints_path.is_file():
            raise FileNotFoundError(
                f"lsp: annotation file {joints_path} does not exist.\n{_INSTRUCTIONS}"
            )
        image_dir = manual_dir / IMAGE_DIR
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"lsp: image folder {image_dir} does not exist.\n{_INSTRUCTIONS}"
            )
        joints, release = load_joints(os.fspath(joints_path))
        if self.num_images is not None:
            joints = joints[: self.num_images]
        visibility = self.visibility
        if visibility == "auto":
            visibility = "one_is_occluded" if release == "lsp" else "one_is_visible"
        split_rule = resolve_split_rule(self.split_rule, release, len(joints))
        splits = split_indices(len(joints), split_rule)
        self.info.metadata.update(
            release=release,
            layout="3x14xN" if release == "lsp" else "14x3xN",
            num_entries=len(joints),
            split_rule=split_rule,
            visibility=visibility,
            one_based=self.one_based,
            on_bad_example=self.on_bad_example,
        )
        return {
            split: self._generate_examples(split, joints, indices, image_dir, visibility)
            for split, indices in splits.items()
            if len(indices)
        }

    def _generate_examples(self, split, joints, indices, image_dir, visibility):
        yield from bu.generate_examples(
            dataset=self.name,
            split=split,
            policy=self.on_bad_example,
            items=((str(i + 1), i) for i in indices),
            convert=lambda i, log: self._convert(i, joints[i], image_dir, visibility, log),
            metadata=self.info.metadata,
        )

    def _convert(self, index, raw, image_dir, visibility, log) -> dict:
        number = index + 1
        what = f"joints.mat entry {index} (image number {number})"
        native = native_keypoints(raw, visibility, one_based=self.one_based, what=what, log=log)
        candidates = [os.path.join(image_dir, f"im{number:04d}.jpg")]
        candidates.append(os.path.join(image_dir, f"im{number:05d}.jpg"))
        path = next((p for p in candidates if os.path.isfile(p)), candidates[-1])
        if not os.path.isfile(path):
            raise bu.BadInput(
                "missing_image", f"{what}: neither {candidates[0]} nor {candidates[1]} exists"
            )
        encoded = bu.read_image(path, log, context=what)
        width, height = encoded.width, encoded.height
        log.note("labelled_joint_outside_image", bu.count_outside(native, width, height))
        box = bu.joint_box(native, width, height, margin=BOX_MARGIN)
        ignore = box is None
        if ignore:
            log.note("person_without_joints")
            box = np.array([-0.5, -0.5, width, height], np.float32)
        person = {
            schema.KEYPOINTS: bu.to_coco17(native[None], COCO_FROM_LSP)[0],
            schema.NATIVE_KEYPOINTS: native,
            schema.BOXES: box,
            schema.AREA: float(box[2] * box[3]),
            schema.IGNORE: ignore,
        }
        return {
            schema.IMAGE: encoded.data,
            schema.IMAGE_ID: np.int64(number),
            **bu.stack_people(
                [person],
                {
                    schema.KEYPOINTS: (NUM_KEYPOINTS, 3),
                    schema.BOXES: (4,),
                    schema.AREA: (),
                    schema.IGNORE: (),
                    schema.NATIVE_KEYPOINTS: (NUM_LSP_JOINTS, 3),
                },
            ),
        }


def load_joints(path: str) -> tuple[np.ndarray, str]:
    """Read ``joints.mat`` -> ``(N, 14, 3)`` float64 ``(x, y, flag)`` and the release name.

    ``3 x 14 x N`` is the original LSP (``"lsp"``), ``14 x 3 x N`` LSP-extended (``"lspet"``).
    """
    mat = scipy.io.loadmat(path)
    if "joints" not in mat:
        raise bu.BadExampleError(f"{path}: expected a MATLAB variable 'joints'")
    joints = np.asarray(mat["joints"], dtype=np.float64)
    if joints.ndim == 2:  # a single image saved without its trailing axis
        joints = joints[..., None]
    if joints.ndim == 3 and joints.shape[:2] == (3, NUM_LSP_JOINTS):
        return joints.transpose(2, 1, 0), "lsp"
    if joints.ndim == 3 and joints.shape[:2] == (NUM_LSP_JOINTS, 3):
        return joints.transpose(2, 0, 1), "lspet"
    raise bu.BadExampleError(
        f"{path}: 'joints' has shape {joints.shape}; expected 3 x 14 x N (LSP) or "
        "14 x 3 x N (LSP-extended)"
    )


def resolve_split_rule(rule: str, release: str, num: int) -> str:
    """``"auto"`` -> the rule for this release and entry count (see the module docstring)."""
    if rule != "auto":
        return rule
    if release == "lsp" and num == 2000:
        return "standard"
    if release == "lspet" and num == 10000:
        return "all_train"
    return "halves"


def split_indices(num: int, rule: str) -> dict[str, np.ndarray]:
    """Entry indices per split for a resolved ``rule`` (not ``"auto"``)."""
    everything = np.arange(num)
    if rule == "standard":
        if num != 2000:
            raise ValueError(f"split_rule='standard' needs the 2000 LSP images, got {num}")
        return {"train": everything[:1000], "test": everything[1000:]}
    if rule == "halves":
        half = math.ceil(num / 2)
        return {"train": everything[:half], "test": everything[half:]}
    if rule == "all_train":
        return {"train": everything}
    if rule == "all_test":
        return {"test": everything}
    raise ValueError(f"unknown split rule {rule!r}")


def native_keypoints(
    raw: np.ndarray, visibility: str, *, one_based: bool, what: str, log: bu.BadExampleLog
) -> np.ndarray:
    """One ``(14, 3)`` entry of ``joints.mat`` -> ``(14, 3)`` float32 with COCO-style flags."""
    flags = raw[:, 2]
    if not np.all(np.isin(flags, (0.0, 1.0))):
        raise bu.BadInput(
            "bad_visibility_flag", f"{what}: visibility flags must be 0 or 1, got {flags.tolist()}"
        )
    if visibility == "one_is_visible":  # LSPet: 0 = no usable position
        v = np.where(flags == 1, 2.0, 0.0)
    else:  # LSP: every joint has a position; 1 = occluded
        v = np.where(flags == 1, 1.0, 2.0)
    labelled = v > 0
    xy = raw[:, :2]
    if not np.all(np.isfinite(xy[labelled])):
        bad = np.flatnonzero(~np.all(np.isfinite(xy), axis=1) & labelled).tolist()
        names = [LSP_JOINTS[j] for j in bad]
        raise bu.BadInput("joints_not_finite", f"{what}: NaN/inf coordinates for {names}")
    log.note("unlabelled_joint", int(np.sum(~labelled)))
    out = np.zeros((NUM_LSP_JOINTS, 3), np.float32)
    out[labelled, :2] = xy[labelled] - (1.0 if one_based else 0.0)
    out[labelled, 2] = v[labelled]
    return out
