"""Procedural multi-person scenes: the renderer behind the ``synthetic_people`` dataset.

Pure NumPy + OpenCV, no TensorFlow, no JAX. :func:`render_scene` draws one image with its labels
in the layout of :mod:`posejax.data.schema` from a ``numpy.random.Generator``; the same generator
state always gives the same bytes.

How a person is made
--------------------
* **Kinematic model.** Joints live in a 3-D body frame (``lat`` = the person's anatomical left,
  ``down``, ``fwd`` = the way the chest faces), in units of standing height. Proportions follow
  standard anthropometric fractions of stature, and each segment length (shared by left and
  right) is scaled by ``U(1 - j, 1 + j)`` with ``j = limb_length_jitter``. Shoulders are sampled
  as abduction in ``[0, 170]`` deg plus forward/backward elevation in ``[-40, 75]`` deg plus a
  humeral twist; elbows flex one way in ``[0, 145]`` deg; hips abduct in ``[-10, 35]`` deg and
  flex in ``[-25, 100]`` deg; knees flex backwards only, in ``[0, 140]`` deg. The torso leans
  and twists a little, the head rolls, nods and turns up to 35 deg relative to the torso.
* **Camera.** The body is turned about the vertical axis by a yaw (front view ``|yaw| <=
  max_yaw``, back view ``180 +- max_yaw`` with probability ``back_facing_prob``), projected
  orthographically, rotated in the image plane by up to ``+-max_rotation`` deg, scaled to a
  height drawn log-uniformly from ``[min_height, max_height] * H`` and placed so that people can
  stick out of the frame. Because labels come from the 3-D body, a person seen from the back has
  the *left* shoulder on the *image left*, exactly as in COCO (labels follow anatomy, not image
  side).
* **Drawing.** Every body part is a filled shape whose ends are the joints (capsules for limbs,
  a convex prism outline for the torso, an ellipse for the head, discs/capsules for hands and
  feet), so keypoints always lie on the body. Parts are painted far-to-near by their depth, with
  per-person garments (shirt on torso and upper arms, long or short sleeves, trousers or shorts,
  shoes, skin) each with a pattern (plain, stripes, checks, blotches), darker outlines between
  parts, side-dependent shading and a lighting gradient. The head has hair on the back and top;
  eyes, nose and mouth are drawn only where they face the camera, ears where they are not
  hidden, so front and back views (hence left and right) can be told apart.
* **Scene.** Backgrounds mix gradients, low-frequency colour noise, stripes/checks and
  distractor shapes, including limb-like capsules dressed like body parts that belong to
  nobody. People get a random depth order; nearer people cover farther ones. A person whose
  box would overlap an earlier one's by more than ``max_overlap`` IoU is moved a few times
  (groups, not piles: on the default scenes the share of people with a box IoU above 0.5
  drops from 17 % to 2 %, 23 % of the labelled keypoints stay occluded). The image is finally
  blurred a little and gets sensor noise.

Labels
------
* ``keypoints`` ``(P, 17, 3)``: a keypoint whose centre falls outside ``[0, W-1] x [0, H-1]``
  is ``(0, 0, 0)``. Otherwise it is ``v = 1`` (labelled, occluded) when, at its pixel, a
  *nearer person* is drawn, or one of its own parts that the keypoint does not belong to is
  drawn over it (e.g. the far arm behind the torso), or, for the five face keypoints, its
  surface normal on the head sphere points away from the camera (nose and eyes of a person
  seen from the back, the far ear of a turned head). Every other keypoint is ``v = 2``. (Should
  sub-pixel rasterisation leave a keypoint's own pixel empty, it is visible iff one of the
  person's pixels in its 3x3 neighbourhood is not covered by a nearer person.) Hence a ``v = 2``
  keypoint always has its own person's ``instance_mask`` within one pixel.
* ``boxes``: tight box of the person's full, pre-occlusion silhouette clipped to the image, in
  the project's pixel convention (pixel ``c`` spans ``[c - 0.5, c + 0.5]``), so a box can start
  at ``-0.5``.
* ``area``: number of the person's *visible* pixels (COCO: area of the visible segmentation).
* ``part_mask``: :data:`posejax.skeleton.BODY_PARTS` class of the nearest person at each pixel;
  hands count as lower arms, feet as lower legs, the neck as head.
* ``instance_mask``: ``i + 1`` on the visible pixels of person ``i``; ``ignore`` is all False.
  People are listed in sampling order, which is independent of their depth order.
* **Dropped people.** People are composited nearest first, so a person's visible pixels are
  known before it is drawn. A person with fewer than ``min_labelled_keypoints`` labelled
  keypoints (``v > 0``) or fewer than ``min_area`` visible pixels is *not drawn at all* (it does
  not appear in the image or the masks), so every drawn body pixel belongs to an annotated
  person. A scene always keeps at least one person (placement is retried if needed).

Conventions: image ``(H, W, 3)`` uint8 RGB; pixel centres at integer coordinates
(:mod:`posejax.skeleton`).
"""

from __future__ import annotations

import colorsys
import dataclasses
import math

import cv2
import numpy as np

from posejax import skeleton
from posejax.data import schema

_SHIFT = 4  # OpenCV fixed-point bits: sub-pixel accurate drawing
_FIX = float(1 << _SHIFT)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """Everything that shapes a synthetic scene.

    Attributes:
      image_size: ``(H, W)`` in pixels.
      min_people, max_people: number of people placed (uniform, inclusive); people that end up
        almost invisible are dropped afterwards (see the module docstring).
      min_height, max_height: standing height of a person as a fraction of ``H`` (log-uniform).
      max_rotation: in-plane rotation range ``+-`` degrees.
      limb_length_jitter: relative per-person segment-length variation ``j`` (``U(1-j, 1+j)``).
      max_yaw: body yaw range ``+-`` degrees around the pure front (or back) view.
      back_facing_prob: probability that a person faces away from the camera.
      centred: single-person mode: the first person is centred and scaled so that the larger
        side of its box is ``U(min_height, max_height)`` of the image (at most 95 %).
      placement_margin: people centres are drawn from the image expanded by this fraction on
        every side (so some people are partly outside the frame).
      min_distractors, max_distractors: background shapes per image (scaled by image area
        relative to 128x128).
      limb_distractor_prob: probability that a distractor is a limb-like capsule chain.
      max_overlap, placement_tries: a person whose box overlaps an earlier person's with IoU
        above ``max_overlap`` is moved (same body, new centre) up to ``placement_tries`` times;
        the last try stays, so overlaps above it still occur. ``placement_tries = 0`` places
        people independently.
      min_labelled_keypoints: people with fewer labelled keypoints are not drawn.
      min_area: people with fewer visible pixels are not drawn.
    """

    image_size: tuple[int, int] = (128, 128)
    min_people: int = 1
    max_people: int = 6
    # Sized like the people COCO's keypoint AP is made of (medium and large, area >= 32^2):
    # at 128x128 about 60 % of the people have >= 1024 visible pixels (median ~1200), while
    # max_height > 1 adds close-ups truncated by the frame. See docs/synthetic_people.md.
    min_height: float = 0.5
    max_height: float = 1.1
    max_rotation: float = 30.0
    limb_length_jitter: float = 0.2
    max_yaw: float = 55.0
    back_facing_prob: float = 0.4
    centred: bool = False
    placement_margin: float = 0.05
    min_distractors: int = 3
    max_distractors: int = 10
    limb_distractor_prob: float = 0.4
    max_overlap: float = 0.3
    placement_tries: int = 8
    min_labelled_keypoints: int = 3
    min_area: int = 12


# --- body model ------------------------------------------------------------------------------

# Segment lengths and radii in units of standing height (head top to ankle is about 1).
_LENGTH = {
    "shoulder_half": 0.115,
    "hip_half": 0.085,
    "torso": 0.30,
    "neck": 0.1,
    "head": 0.062,  # head sphere radius
    "upper_arm": 0.17,
    "lower_arm": 0.145,
    "hand": 0.04,
    "upper_leg": 0.245,
    "lower_leg": 0.245,
    "foot": 0.065,
}
_RADIUS = {
    "upper_arm": 0.036,
    "lower_arm": 0.029,
    "hand": 0.03,
    "upper_leg": 0.056,
    "lower_leg": 0.041,
    "foot": 0.026,
    "neck": 0.032,
    "torso_depth": 0.06,
}

# Face points on the unit head sphere, head frame (lat, down, fwd).
_FACE_LOCAL = np.array(
    [
        [0.0, 0.12, 0.95],  # nose
        [0.36, -0.12, 0.86],  # left eye
        [-0.36, -0.12, 0.86],  # right eye
        [0.93, 0.02, 0.0],  # left ear
        [-0.93, 0.02, 0.0],  # right ear
    ]
)
_MOUTH_LOCAL = np.array([0.0, 0.5, 0.8])
_FACE_VISIBLE = -0.15  # a face point is visible when normal . to_camera exceeds this

# Garments (indices into a person's appearance list).
_SHIRT, _TROUSERS, _SKIN, _HEAD, _SHOES = range(5)

# Body-part classes (skeleton.BODY_PARTS).
_P = {name: i for i, name in enumerate(skeleton.BODY_PARTS)}

# Part classes a keypoint belongs to: a keypoint drawn over by any other of its own parts is
# self-occluded.
_KEYPOINT_PARTS: tuple[frozenset[int], ...] = (
    frozenset({_P["head"]}),
    frozenset({_P["head"]}),
    frozenset({_P["head"]}),
    frozenset({_P["head"]}),
    frozenset({_P["head"]}),
    frozenset({_P["torso"], _P["left_upper_arm"]}),
    frozenset({_P["torso"], _P["right_upper_arm"]}),
    frozenset({_P["left_upper_arm"], _P["left_lower_arm"]}),
    frozenset({_P["right_upper_arm"], _P["right_lower_arm"]}),
    frozenset({_P["left_lower_arm"]}),
    frozenset({_P["right_lower_arm"]}),
    frozenset({_P["torso"], _P["left_upper_leg"]}),
    frozenset({_P["torso"], _P["right_upper_leg"]}),
    frozenset({_P["left_upper_leg"], _P["left_lower_leg"]}),
    frozenset({_P["right_upper_leg"], _P["right_lower_leg"]}),
    frozenset({_P["left_lower_leg"]}),
    frozenset({_P["right_lower_leg"]}),
)
_KEYPOINT_PART_TABLE = np.zeros((skeleton.NUM_KEYPOINTS, skeleton.NUM_BODY_PARTS), dtype=bool)
for _k, _parts in enumerate(_KEYPOINT_PARTS):
    _KEYPOINT_PART_TABLE[_k, list(_parts)] = True


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(math.sqrt(float(v @ v)), 1e-9)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # np.cross is ~10x slower on single 3-vectors.
    a0, a1, a2 = a.tolist()
    b0, b1, b2 = b.tolist()
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _limb_chain(
    upper_dir: np.ndarray, bend_forward: bool, twist: float, flex: float
) -> tuple[np.ndarray, np.ndarray]:
    """Directions of a two-segment limb: ``upper_dir`` and the distal segment after flexing.

    The distal segment rotates by ``flex`` (>= 0) towards the bend direction: the body's forward
    axis made perpendicular to the upper segment (backwards for knees), turned by ``twist``
    about the upper segment. Flexion is one-way, as for elbows and knees.
    """
    u = _unit(upper_dir)
    fwd = np.array([0.0, 0.0, 1.0 if bend_forward else -1.0])
    b0 = fwd - (fwd @ u) * u
    if float(b0 @ b0) < 1e-6:  # limb along the forward axis: bend upwards
        b0 = np.array([0.0, -1.0, 0.0]) - u[1] * u
    b0 = _unit(b0)
    b = b0 * math.cos(twist) + _cross(u, b0) * math.sin(twist)
    return u, _unit(u * math.cos(flex) + b * math.sin(flex))


@dataclasses.dataclass
class _Part:
    """One drawable body part in image pixels."""

    part_class: int
    garment: int
    kind: str  # "capsule", "disc", "poly", "ellipse"
    points: np.ndarray  # (n, 2): capsule ends, disc centre, polygon, ellipse centre
    radius: float  # pixels (ellipse: (a, b, angle_deg) stored in `extra`)
    key: float  # drawing order: larger is farther, drawn first
    shade: float = 1.0
    extra: tuple = ()


@dataclasses.dataclass
class _Body:
    """A posed, projected person ready to composite."""

    keypoints: np.ndarray  # (17, 2) image pixels
    face_facing: np.ndarray  # (5,) normal . to_camera of the face keypoints
    parts: list[_Part]
    appearance: list[dict]
    head: dict
    scale: float  # pixels per body unit (standing height in pixels)


def _sample_pose_3d(rng: np.random.Generator, cfg: SceneConfig) -> dict[str, np.ndarray]:
    """Joint positions in the body frame (lat, down, fwd), pelvis at the origin."""
    j = cfg.limb_length_jitter
    seg = {name: length * rng.uniform(1 - j, 1 + j) for name, length in _LENGTH.items()}
    seg["head"] = _LENGTH["head"] * rng.uniform(0.9, 1.1)  # heads vary less than limbs

    rad = math.radians
    torso_rot = (
        _rot_y(rad(rng.uniform(-20, 20)))
        @ _rot_x(-rad(rng.uniform(-10, 25)))  # forward lean moves the shoulders forward
        @ _rot_z(rad(rng.uniform(-12, 12)))
    )
    p: dict[str, np.ndarray] = {}
    neck_base = torso_rot @ np.array([0.0, -seg["torso"], 0.0])
    p["neck_base"] = neck_base
    for side, name in ((1.0, "left"), (-1.0, "right")):
        p[f"{name}_shoulder"] = torso_rot @ np.array(
            [side * seg["shoulder_half"], -seg["torso"], 0.0]
        )
        p[f"{name}_hip"] = np.array([side * seg["hip_half"], 0.0, 0.0])
        # Torso outline points: shoulders and hips widened a little, with front/back thickness.
        for depth_sign in (1.0, -1.0):
            d = depth_sign * _RADIUS["torso_depth"]
            p[f"torso_{name}_shoulder_{depth_sign:+.0f}"] = torso_rot @ np.array(
                [side * (seg["shoulder_half"] + 0.015), -seg["torso"] + 0.01, d]
            )
            p[f"torso_{name}_hip_{depth_sign:+.0f}"] = np.array(
                [side * (seg["hip_half"] + 0.025), 0.02, d]
            )
            # Sloping trapezius between shoulder and neck, so the neck does not look too long.
            p[f"torso_{name}_trapezius_{depth_sign:+.0f}"] = torso_rot @ np.array(
                [side * 0.05, -seg["torso"] - 0.022, 0.6 * d]
            )

    head_rot = (
        torso_rot
        @ _rot_y(rad(rng.uniform(-35, 35)))
        @ _rot_x(-rad(rng.uniform(-20, 25)))
        @ _rot_z(rad(rng.uniform(-20, 20)))
    )
    head_centre = neck_base + head_rot @ np.array([0.0, -seg["neck"], 0.01])
    p["head_centre"] = head_centre
    p["head_top"] = head_centre + head_rot @ np.array([0.0, -seg["head"], 0.0])
    for i, name in enumerate(skeleton.COCO_KEYPOINTS[:5]):
        p[name] = head_centre + seg["head"] * (head_rot @ _FACE_LOCAL[i])
    p["mouth"] = head_centre + seg["head"] * (head_rot @ _MOUTH_LOCAL)
    p["mouth_side"] = p["mouth"] + seg["head"] * (head_rot @ np.array([0.28, 0.0, 0.0]))
    face_normals = (head_rot @ (_FACE_LOCAL / np.linalg.norm(_FACE_LOCAL, axis=1)[:, None]).T).T
    p["_face_normals"] = face_normals

    for side, name in ((1.0, "left"), (-1.0, "right")):
        # Arms: abduction (0 = hanging, 90 = horizontal, 170 = overhead), skewed to low values.
        abd = rad(170.0 * rng.uniform() ** 1.5)
        elev = rad(rng.uniform(-40, 75))
        upper = np.array(
            [side * math.sin(abd) * math.cos(elev), math.cos(abd) * math.cos(elev), math.sin(elev)]
        )
        # Positive internal twist swings the forearm towards the midline.
        twist = -side * rad(rng.uniform(-60, 90))
        u, low = _limb_chain(upper, True, twist, rad(145.0 * rng.uniform() ** 1.2))
        u, low = torso_rot @ u, torso_rot @ low
        p[f"{name}_elbow"] = p[f"{name}_shoulder"] + seg["upper_arm"] * u
        p[f"{name}_wrist"] = p[f"{name}_elbow"] + seg["lower_arm"] * low
        p[f"{name}_hand"] = p[f"{name}_wrist"] + seg["hand"] * low

        # Legs: abduction [-10, 35] skewed to small, flexion mostly in a walking range.
        abd = rad(-10.0 + 45.0 * rng.uniform() ** 2)
        if rng.uniform() < 0.6:
            flex = rad(rng.uniform(-25, 35))
        else:
            flex = rad(rng.uniform(-25, 100))
        upper = np.array(
            [side * math.sin(abd) * math.cos(flex), math.cos(abd) * math.cos(flex), math.sin(flex)]
        )
        knee = rad(140.0 * rng.uniform() ** 1.7)
        u, low = _limb_chain(upper, False, side * rad(rng.uniform(-15, 15)), knee)
        p[f"{name}_knee"] = p[f"{name}_hip"] + seg["upper_leg"] * u
        p[f"{name}_ankle"] = p[f"{name}_knee"] + seg["lower_leg"] * low
        # Feet point forward and slightly down, perpendicular-ish to the shank.
        foot_dir = _unit(np.array([side * 0.15, 0.35, 1.0]) - 0.5 * low)
        p[f"{name}_foot"] = p[f"{name}_ankle"] + seg["foot"] * foot_dir
    p["_head_radius"] = np.array(seg["head"])
    return p


def _camera_rotation(yaw: float) -> np.ndarray:
    """Body frame -> camera frame (x right, y down, z away from the camera)."""
    facing_camera = np.diag([1.0, 1.0, -1.0])  # the chest faces the camera at yaw 0
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]) @ facing_camera


def _sample_colour(rng: np.random.Generator) -> np.ndarray:
    """A clothing colour: random hue, varied saturation and value."""
    hue, sat, val = rng.uniform((0.0, 0.12, 0.16), (1.0, 1.0, 0.98))
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32) * 255.0


_SKIN_TONES = np.array(
    [
        [255, 224, 196],
        [241, 194, 150],
        [224, 172, 125],
        [198, 134, 99],
        [141, 85, 54],
        [90, 56, 37],
    ],
    dtype=np.float32,
)
_HAIR_TONES = np.array(
    [[20, 15, 12], [60, 40, 25], [110, 75, 40], [200, 165, 100], [150, 150, 150], [140, 50, 20]],
    dtype=np.float32,
)


_PATTERNS = ("plain", "plain", "stripes", "checks", "blotch")


def _sample_garment(rng: np.random.Generator, scale: float) -> dict:
    base = _sample_colour(rng)
    pattern = _PATTERNS[int(rng.integers(len(_PATTERNS)))]
    second = _sample_colour(rng) if rng.uniform() < 0.6 else base * rng.uniform(0.4, 0.8)
    return {
        "pattern": pattern,
        "c0": base,
        "c1": second.astype(np.float32),
        "period": max(3.0, scale * rng.uniform(0.025, 0.08)),
        "angle": rng.uniform(0, math.pi),
        "grid": rng.uniform(0, 1, (4, 4)).astype(np.float32),
    }


def _sample_appearance(rng: np.random.Generator, scale: float) -> list[dict]:
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    i = int(t)
    skin = _SKIN_TONES[i] + (t - i) * (
        _SKIN_TONES[min(i + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[i]
    )
    skin = skin * rng.uniform(0.9, 1.05)
    hair = _HAIR_TONES[rng.integers(len(_HAIR_TONES))] * rng.uniform(0.8, 1.2)
    shoes = np.full(3, rng.uniform(10, 90), dtype=np.float32) + rng.uniform(-10, 10, 3)
    skin_garment = {"pattern": "plain", "c0": skin.astype(np.float32)}
    return [
        _sample_garment(rng, scale),  # shirt
        _sample_garment(rng, scale),  # trousers
        skin_garment,
        {**skin_garment, "hair": np.clip(hair, 0, 255).astype(np.float32)},  # head
        {"pattern": "plain", "c0": np.clip(shoes, 0, 255).astype(np.float32)},
    ]


def _sample_body(
    rng: np.random.Generator, cfg: SceneConfig, height_px: float, centre: np.ndarray
) -> _Body:
    """Pose, dress, project and place one person whose standing height is ``height_px``."""
    pose = _sample_pose_3d(rng, cfg)
    max_yaw = math.radians(cfg.max_yaw)
    yaw = rng.uniform(-max_yaw, max_yaw)
    if rng.uniform() < cfg.back_facing_prob:
        yaw += math.pi
    cam = _camera_rotation(yaw)
    roll = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    c, s = math.cos(roll), math.sin(roll)
    in_plane = np.array([[c, -s], [s, c]]) * height_px

    names = [k for k in pose if not k.startswith("_")]
    p3 = np.stack([pose[k] for k in names]) @ cam.T  # camera frame, body units
    xy = p3[:, :2] @ in_plane.T
    depth = p3[:, 2]
    head_r = max(1.0, float(pose["_head_radius"]) * height_px)
    # Centre the person's 2-D extent (joints, hands, feet, head) on `centre`.
    extent = np.concatenate([xy, xy[names.index("head_centre")] + head_r * np.eye(2)])
    extent = np.concatenate([extent, xy[names.index("head_centre")] - head_r * np.eye(2)])
    lo, hi = extent.min(0), extent.max(0)
    xy = xy - (lo + hi) / 2 + centre
    at = {k: xy[i] for i, k in enumerate(names)}
    z = {k: float(depth[i]) for i, k in enumerate(names)}

    keypoints = np.stack([at[k] for k in skeleton.COCO_KEYPOINTS])
    to_camera = -(pose["_face_normals"] @ cam.T)[:, 2]

    appearance = _sample_appearance(rng, height_px)
    long_sleeves = rng.uniform() < 0.5
    long_trousers = rng.uniform() < 0.7
    width = rng.uniform(0.85, 1.25)  # build

    def radius(name: str) -> float:
        return max(1.0, _RADIUS[name] * width * height_px)

    parts: list[_Part] = []
    hull = np.stack([at[k] for k in names if k.startswith("torso_")])
    torso_depth = float(np.mean([z[k] for k in names if k.startswith("torso_")]))
    parts.append(_Part(_P["torso"], _SHIRT, "poly", hull, 0.0, torso_depth))
    parts.append(
        _Part(
            _P["head"],
            _SKIN,
            "capsule",
            np.stack([at["neck_base"], at["head_centre"]]),
            radius("neck"),
            torso_depth - 0.001,
        )
    )
    up = at["head_top"] - at["head_centre"]
    parts.append(
        _Part(
            _P["head"],
            _HEAD,
            "ellipse",
            at["head_centre"][None],
            head_r,
            z["head_centre"] - 0.05,
            extra=(head_r, 1.12 * head_r, math.degrees(math.atan2(up[0], -up[1]))),
        )
    )
    for side in ("left", "right"):
        far = 0.85 if z[f"{side}_shoulder"] > torso_depth + 0.02 else 1.0
        seg = [
            ("upper_arm", "shoulder", "elbow", _SHIRT, -0.02),
            ("lower_arm", "elbow", "wrist", _SHIRT if long_sleeves else _SKIN, -0.02),
            ("hand", "wrist", "hand", _SKIN, -0.021),
            ("upper_leg", "hip", "knee", _TROUSERS, 0.01),
            ("lower_leg", "knee", "ankle", _TROUSERS if long_trousers else _SKIN, 0.005),
            ("foot", "ankle", "foot", _SHOES, 0.004),
        ]
        for part, a, b, garment, bias in seg:
            cls_name = {"hand": "lower_arm", "foot": "lower_leg"}.get(part, part)
            ends = np.stack([at[f"{side}_{a}"], at[f"{side}_{b}"]])
            key = 0.5 * (z[f"{side}_{a}"] + z[f"{side}_{b}"]) + bias
            shade = far if "arm" in part or part == "hand" else 1.0
            if "leg" in part or part == "foot":
                shade = 0.88 if z[f"{side}_hip"] > torso_depth + 0.02 else 1.0
            parts.append(
                _Part(_P[f"{side}_{cls_name}"], garment, "capsule", ends, radius(part), key, shade)
            )
    for part in parts:
        part.shade *= rng.uniform(0.93, 1.07)

    # 2-D head geometry for hair and face marks.
    face_dir = cam @ (_face_forward(pose))
    head = {
        "centre": at["head_centre"],
        "radius": head_r,
        "up": up / max(float(np.linalg.norm(up)), 1e-9),
        "face_dir": (in_plane @ face_dir[:2]) / height_px,  # projected unit forward of the face
        "toward": float(-face_dir[2]),  # 1 facing the camera, -1 facing away
        "face_points": keypoints[:5],
        "mouth": at["mouth"],
        "mouth_side": at["mouth_side"] - at["mouth"],
        "mouth_toward": float(-(cam @ _unit(pose["mouth"] - pose["head_centre"]))[2]),
    }
    return _Body(keypoints, to_camera, parts, appearance, head, height_px)


def _face_forward(pose: dict[str, np.ndarray]) -> np.ndarray:
    """Unit forward direction of the face (body frame), from the nose normal."""
    return _unit(pose["_face_normals"][0])


# --- rasterisation ---------------------------------------------------------------------------


def _fix(points: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(points) * _FIX).astype(np.int32)


def _fixed_point(point) -> tuple[int, int]:
    return int(round(point[0] * _FIX)), int(round(point[1] * _FIX))


def _draw_part(canvas: np.ndarray, part: _Part, origin: np.ndarray, value) -> None:
    """Fill ``part`` (image coordinates) into ``canvas`` whose pixel (0, 0) is at ``origin``."""
    pts = part.points - origin
    if part.kind == "capsule":
        a, b = pts
        r = part.radius
        d = b - a
        n = math.hypot(d[0], d[1])
        radius = int(round(r * _FIX))
        if n > 1e-6:
            normal = np.array([-d[1], d[0]]) * (r / n)
            quad = _fix([a + normal, b + normal, b - normal, a - normal])
            cv2.fillConvexPoly(canvas, quad, value, cv2.LINE_8, _SHIFT)
        cv2.circle(canvas, _fixed_point(a), radius, value, -1, cv2.LINE_8, _SHIFT)
        cv2.circle(canvas, _fixed_point(b), radius, value, -1, cv2.LINE_8, _SHIFT)
    elif part.kind == "disc":
        radius = int(round(part.radius * _FIX))
        cv2.circle(canvas, _fixed_point(pts[0]), radius, value, -1, cv2.LINE_8, _SHIFT)
    elif part.kind == "ellipse":
        a, b, angle = part.extra
        axes = (int(round(a * _FIX)), int(round(b * _FIX)))
        cv2.ellipse(
            canvas, _fixed_point(pts[0]), axes, angle, 0, 360, value, -1, cv2.LINE_8, _SHIFT
        )
    elif part.kind == "poly":
        hull = cv2.convexHull(_fix(pts).reshape(-1, 1, 2))
        cv2.fillConvexPoly(canvas, hull, value, cv2.LINE_8, _SHIFT)
    else:
        raise ValueError(part.kind)


def _part_bounds(parts: list[_Part]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.min(
        [p.points.min(0) - p.radius * (1.15 if p.kind == "ellipse" else 1) for p in parts], axis=0
    )
    hi = np.max(
        [p.points.max(0) + p.radius * (1.15 if p.kind == "ellipse" else 1) for p in parts], axis=0
    )
    return lo, hi


def _roi(parts: list[_Part], h: int, w: int) -> tuple[int, int, int, int] | None:
    """Integer window ``(x0, y0, x1, y1)`` (exclusive end) covering the parts, clipped."""
    lo, hi = _part_bounds(parts)
    x0, y0 = max(0, int(math.floor(lo[0])) - 2), max(0, int(math.floor(lo[1])) - 2)
    x1, y1 = min(w, int(math.ceil(hi[0])) + 3), min(h, int(math.ceil(hi[1])) + 3)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _rasterise(parts: list[_Part], window: tuple[int, int, int, int]) -> np.ndarray:
    """Label map of the window: ``i + 1`` where part ``i`` is the nearest drawn part."""
    x0, y0, x1, y1 = window
    labels = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    origin = np.array([x0, y0], dtype=np.float64)
    for i in sorted(range(len(parts)), key=lambda i: -parts[i].key):  # far to near
        _draw_part(labels, parts[i], origin, int(i + 1))
    return labels


def _garment_texture(
    garment: dict, xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """``(h, w, 3)`` float32 texture of a garment over a window with pixel columns ``xs`` and
    rows ``ys`` (1-D coordinates; patterns are built by broadcasting)."""
    c0 = garment["c0"]
    pattern = garment["pattern"]
    if pattern == "plain":
        return np.broadcast_to(c0, (*shape, 3))
    c1 = garment["c1"]
    if pattern == "blotch":
        t = cv2.resize(garment["grid"], (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        return c0 + t[..., None] * (c1 - c0)
    ca, sa = math.cos(garment["angle"]), math.sin(garment["angle"])
    u = np.floor(
        (xs * (ca / garment["period"]))[None, :] + (ys * (sa / garment["period"]))[:, None]
    )
    if pattern == "stripes":
        mask = (u % 2).astype(bool)
    else:  # checks
        v = np.floor(
            (xs * (-sa / garment["period"]))[None, :] + (ys * (ca / garment["period"]))[:, None]
        )
        mask = ((u + v) % 2).astype(bool)
    return np.where(mask[..., None], c1, c0)


def _head_texture(body: _Body, window, shape) -> np.ndarray:
    """Skin with hair, eyes, nose, mouth and ears drawn where they face the camera."""
    x0, y0 = window[0], window[1]
    origin = np.array([x0, y0], dtype=np.float64)
    garment = body.appearance[_HEAD]
    tex = np.empty((*shape, 3), dtype=np.float32)
    tex[:] = garment["c0"]
    head = body.head
    r = head["radius"]
    c = head["centre"] - origin
    back = (1.0 - head["toward"]) / 2.0  # 0 facing the camera, 1 facing away
    hair_centre = (
        c + r * (0.55 * (1 - back) + 0.1 * back) * head["up"] - 0.45 * r * head["face_dir"]
    )
    hair_r = r * (0.95 + 0.15 * back)
    cv2.circle(
        tex,
        _fixed_point(hair_centre),
        int(round(hair_r * _FIX)),
        garment["hair"].tolist(),
        -1,
        cv2.LINE_8,
        _SHIFT,
    )
    if r < 2.5:
        return tex  # too small for facial detail
    skin = garment["c0"]
    dark = (skin * 0.55).tolist()
    face = head["face_points"] - origin
    facing = body.face_facing
    mark = max(0.7, 0.15 * r)
    for ear in (3, 4):
        if facing[ear] > _FACE_VISIBLE:
            cv2.circle(
                tex,
                _fixed_point(face[ear]),
                int(round(max(0.8, 0.2 * r) * _FIX)),
                (skin * 0.8).tolist(),
                -1,
                cv2.LINE_8,
                _SHIFT,
            )
    for eye in (1, 2):
        if facing[eye] > 0.2:
            if r >= 6:
                cv2.circle(
                    tex,
                    _fixed_point(face[eye]),
                    int(round(0.22 * r * _FIX)),
                    (240, 240, 240),
                    -1,
                    cv2.LINE_8,
                    _SHIFT,
                )
            cv2.circle(
                tex,
                _fixed_point(face[eye]),
                int(round(mark * _FIX)),
                (25, 20, 20),
                -1,
                cv2.LINE_8,
                _SHIFT,
            )
    if facing[0] > 0.2:
        cv2.circle(
            tex, _fixed_point(face[0]), int(round(mark * 0.8 * _FIX)), dark, -1, cv2.LINE_8, _SHIFT
        )
    if head["mouth_toward"] > 0.2:
        m = head["mouth"] - origin
        side = head["mouth_side"]
        cv2.line(
            tex,
            _fixed_point(m - side),
            _fixed_point(m + side),
            (150, 40, 40),
            max(1, int(round(0.12 * r))),
            cv2.LINE_8,
            _SHIFT,
        )
    return tex


def _shade_window(
    parts: list[_Part],
    appearance: list[dict],
    labels: np.ndarray,
    window: tuple[int, int, int, int],
    rng: np.random.Generator,
    head_texture=None,
) -> np.ndarray:
    """Colour every labelled pixel of a window: garment texture x shading x outline."""
    x0, y0, x1, y1 = window
    shape = labels.shape
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    garment_of = np.array([0] + [p.garment for p in parts], dtype=np.uint8)[labels]
    colour = np.zeros((*shape, 3), dtype=np.float32)
    for g in np.unique(garment_of[labels > 0]):
        m = garment_of == g
        if g == _HEAD and head_texture is not None:
            tex = head_texture(shape)
        else:
            tex = _garment_texture(appearance[g], xs, ys, shape)
        colour[m] = tex[m]
    shade = np.array([0.0] + [p.shade for p in parts], dtype=np.float32)[labels]
    # Outline: a pixel whose 4-neighbour has another label (part boundary or silhouette).
    edge = np.zeros(shape, dtype=bool)
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    shade[edge] *= 0.6
    # A soft lighting gradient across the window.
    angle = rng.uniform(0, 2 * math.pi)
    gain = rng.uniform(0.0, 0.25) / max(x1 - x0, y1 - y0, 1)
    light_x = 1.0 + gain * math.cos(angle) * (xs - xs.mean())
    light_y = gain * math.sin(angle) * (ys - ys.mean())
    shade *= light_x[None, :] + light_y[:, None]
    return colour * shade[..., None]


# --- background ------------------------------------------------------------------------------


def _background(rng: np.random.Generator, cfg: SceneConfig) -> np.ndarray:
    """Gradient + low-frequency colour noise (+ stripes or checks) + distractor shapes."""
    h, w = cfg.image_size
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    tx, ty = xs * math.cos(a), ys * math.sin(a)
    t = tx[None, :] + ty[:, None]
    lo = tx.min() + ty.min()
    t = (t - lo) / max(float(tx.max() + ty.max() - lo), 1e-6)
    img = c0 + t[..., None] * (c1 - c0)
    g = int(rng.integers(2, 9))
    blobs = rng.normal(0, rng.uniform(5, 45), (g, g, 3)).astype(np.float32)
    img += cv2.resize(blobs, (w, h), interpolation=cv2.INTER_CUBIC)
    kind = rng.integers(4)
    if kind >= 2:  # stripes or checks
        period = rng.uniform(4, 0.3 * min(h, w))
        a = rng.uniform(0, math.pi)
        ca, sa = math.cos(a) / period, math.sin(a) / period
        mask = np.floor((xs * ca)[None, :] + (ys * sa)[:, None])
        if kind == 3:
            mask += np.floor((xs * -sa)[None, :] + (ys * ca)[:, None])
        img += (mask % 2)[..., None] * rng.uniform(-60, 60, 3).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    _draw_distractors(rng, cfg, img)
    return img


def _draw_distractors(rng: np.random.Generator, cfg: SceneConfig, img: np.ndarray) -> None:
    h, w = cfg.image_size
    area_scale = h * w / (128.0 * 128.0)
    n = int(round(rng.integers(cfg.min_distractors, cfg.max_distractors + 1) * area_scale))
    size = min(h, w)
    for _ in range(n):
        colour = rng.uniform(0, 255, 3).tolist()
        centre = rng.uniform(0, 1, 2) * (w, h)
        if rng.uniform() < cfg.limb_distractor_prob:
            _draw_limb_distractor(rng, img, centre, size)
            continue
        kind = rng.integers(5)
        r = rng.uniform(0.03, 0.2) * size
        if kind == 0:
            d = rng.uniform(-1, 1, 2) * r
            cv2.rectangle(img, _fix(centre - d), _fix(centre + d), colour, -1, cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            cv2.circle(img, _fixed_point(centre), int(r * _FIX), colour, -1, cv2.LINE_AA, _SHIFT)
        elif kind == 2:
            axes = (int(r * _FIX), int(r * rng.uniform(0.2, 1.0) * _FIX))
            cv2.ellipse(
                img,
                _fixed_point(centre),
                axes,
                rng.uniform(0, 180),
                0,
                360,
                colour,
                -1,
                cv2.LINE_AA,
                _SHIFT,
            )
        elif kind == 3:
            pts = centre + rng.uniform(-r, r, (int(rng.integers(3, 7)), 2))
            cv2.fillPoly(img, [_fix(pts)], colour, cv2.LINE_AA, _SHIFT)
        else:
            end = centre + rng.uniform(-2 * r, 2 * r, 2)
            cv2.line(
                img,
                _fixed_point(centre),
                _fixed_point(end),
                colour,
                int(rng.integers(1, 4)),
                cv2.LINE_AA,
                _SHIFT,
            )


def _draw_limb_distractor(
    rng: np.random.Generator, img: np.ndarray, start: np.ndarray, size: int
) -> None:
    """A one- or two-segment capsule chain dressed like an arm or a leg of nobody."""
    h, w = img.shape[:2]
    scale = rng.uniform(0.2, 0.9) * size  # height of the imaginary owner
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.85, 1.05)
    appearance = [_sample_garment(rng, scale)] * 2 + [{"pattern": "plain", "c0": skin}]
    radius = max(1.0, rng.uniform(0.025, 0.055) * scale)
    points = [start]
    angle = rng.uniform(0, 2 * math.pi)
    for _ in range(int(rng.integers(1, 3))):
        length = rng.uniform(0.12, 0.25) * scale
        points.append(points[-1] + length * np.array([math.cos(angle), math.sin(angle)]))
        angle += math.radians(rng.uniform(-120, 120))
    garment = _SHIRT if rng.uniform() < 0.6 else _SKIN
    parts = [
        _Part(
            0,
            garment if i == 0 or rng.uniform() < 0.5 else _SKIN,
            "capsule",
            np.stack([points[i], points[i + 1]]),
            radius * (0.85**i),
            float(-i),
        )
        for i in range(len(points) - 1)
    ]
    if rng.uniform() < 0.5:  # a hand or foot at the end
        parts.append(_Part(0, _SKIN, "disc", points[-1][None], radius * 1.05, -5.0))
    window = _roi(parts, h, w)
    if window is None:
        return
    labels = _rasterise(parts, window)
    colour = _shade_window(parts, appearance, labels, window, rng)
    x0, y0, x1, y1 = window
    region = img[y0:y1, x0:x1]
    m = labels > 0
    region[m] = np.clip(colour[m], 0, 255).astype(np.uint8)


# --- scene -----------------------------------------------------------------------------------


def _place_people(rng: np.random.Generator, cfg: SceneConfig, attempt: int) -> list[_Body]:
    """Sample the people of a scene; retries (``attempt > 0``) centre the first person, and
    late retries place a single person that fits the frame, so a scene is never empty."""
    h, w = cfg.image_size
    n = 1 if attempt > 3 else int(rng.integers(cfg.min_people, cfg.max_people + 1))
    bodies = []

    def anywhere() -> np.ndarray:  # a centre in the image grown by placement_margin
        m = cfg.placement_margin
        return np.array([w, h]) * rng.uniform(-m, 1 + m, 2)

    for i in range(n):
        log_h = rng.uniform(math.log(cfg.min_height), math.log(cfg.max_height))
        height = math.exp(log_h) * h
        central = i == 0 and (cfg.centred or attempt > 0)
        if central:
            centre = np.array([w, h]) * (0.5 + rng.uniform(-0.05, 0.05, 2))
        else:
            centre = anywhere()
        body_seed = int(rng.integers(2**63))
        body = _sample_body(np.random.default_rng(body_seed), cfg, height, centre)
        # Crowding like photos of groups, not piles: re-draw the position (same body) while its
        # box overlaps an earlier person's by more than max_overlap IoU; after placement_tries
        # the last position stays, so heavy overlaps remain possible, just rarer.
        for _ in range(cfg.placement_tries if not central else 0):
            if _max_iou(body, bodies) <= cfg.max_overlap:
                break
            body = _sample_body(np.random.default_rng(body_seed), cfg, height, anywhere())
        if central and (cfg.centred or attempt > 3):
            # Same pose (same seed) rescaled: a centred person's larger box side spans the
            # drawn height fraction (capped at 95 %) of the image, so nobody leaves the frame.
            lo, hi = _part_bounds(body.parts)
            extent = float(np.max((hi - lo) / np.array([w, h])))
            target = min(0.95, height / h) if cfg.centred else min(0.95, extent)
            if abs(extent - target) > 1e-3:
                body = _sample_body(
                    np.random.default_rng(body_seed), cfg, height * target / extent, centre
                )
        bodies.append(body)
    return bodies


def _max_iou(body: _Body, others: list[_Body]) -> float:
    """Largest IoU between ``body``'s silhouette box and those of ``others`` (0 if none)."""
    lo, hi = _part_bounds(body.parts)
    best = 0.0
    for other in others:
        olo, ohi = _part_bounds(other.parts)
        inter = np.prod(np.clip(np.minimum(hi, ohi) - np.maximum(lo, olo), 0.0, None))
        union = np.prod(hi - lo) + np.prod(ohi - olo) - inter
        best = max(best, float(inter / max(union, 1e-9)))
    return best


def _visibility(
    body: _Body, labels: np.ndarray, window, covered: np.ndarray, h: int, w: int
) -> np.ndarray:
    """COCO ``v`` per keypoint (see the module docstring for the rule)."""
    x0, y0, x1, y1 = window
    part_class = np.array([0] + [p.part_class for p in body.parts], dtype=np.int64)
    v = np.zeros(skeleton.NUM_KEYPOINTS, dtype=np.float32)
    for k, (x, y) in enumerate(body.keypoints):
        if not (0.0 <= x <= w - 1 and 0.0 <= y <= h - 1):
            continue
        r, c = int(round(y)) - y0, int(round(x)) - x0  # the window holds every part
        label = labels[r, c]
        if label:
            own_class = part_class[label]
            occluded = bool(covered[r + y0, c + x0]) or not _KEYPOINT_PART_TABLE[k, own_class]
        else:
            # Sub-pixel rasterisation can leave a keypoint's own pixel empty (thin parts): judge
            # by the person's pixels around it instead.
            rows, cols = slice(max(r - 1, 0), r + 2), slice(max(c - 1, 0), c + 2)
            mine = labels[rows, cols] > 0
            occluded = not np.any(mine & ~covered[y0:y1, x0:x1][rows, cols])
        if k < 5:
            occluded |= body.face_facing[k] <= _FACE_VISIBLE
        v[k] = 1.0 if occluded else 2.0
    return v


def render_scene(rng: np.random.Generator, cfg: SceneConfig) -> dict[str, np.ndarray]:
    """Render one synthetic scene with its labels.

    Args:
      rng: the only source of randomness; equal generator states give identical outputs.
      cfg: scene parameters.

    Returns:
      A dict in the :mod:`posejax.data.schema` layout (NumPy arrays, no ``image_id``):
      ``image`` (H, W, 3) uint8 RGB, ``keypoints`` (P, 17, 3) float32, ``boxes`` (P, 4) float32
      xywh, ``area`` (P,) float32, ``ignore`` (P,) bool (all False), ``part_mask`` (H, W, 1)
      uint8 and ``instance_mask`` (H, W, 1) uint8, with ``P >= 1``.
    """
    h, w = cfg.image_size
    background = _background(rng, cfg)
    attempt = 0
    while True:
        out = _composite(rng, cfg, background, attempt)
        if out[schema.KEYPOINTS].shape[0] > 0:
            break
        attempt += 1
    image = out[schema.IMAGE]
    # Camera: a little blur and sensor noise.
    if rng.uniform() < 0.5:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 0.8))
    noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0.0, 6.0)
    out[schema.IMAGE] = np.clip(image + noise, 0, 255).astype(np.uint8)
    assert out[schema.IMAGE].shape == (h, w, 3)
    return out


def _composite(
    rng: np.random.Generator, cfg: SceneConfig, background: np.ndarray, attempt: int
) -> dict[str, np.ndarray]:
    h, w = cfg.image_size
    bodies = _place_people(rng, cfg, attempt)
    depth_order = rng.permutation(len(bodies))  # depth_order[0] is the nearest person
    image = background.copy()
    part_mask = np.zeros((h, w), dtype=np.uint8)
    instance_mask = np.zeros((h, w), dtype=np.uint8)
    covered = np.zeros((h, w), dtype=bool)
    kept: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
    for idx in depth_order:  # nearest first: only still-uncovered pixels are painted
        body = bodies[idx]
        window = _roi(body.parts, h, w)
        if window is None:
            continue
        x0, y0, x1, y1 = window
        labels = _rasterise(body.parts, window)
        v = _visibility(body, labels, window, covered, h, w)
        silhouette = labels > 0
        visible = silhouette & ~covered[y0:y1, x0:x1]
        area = int(visible.sum())
        if (v > 0).sum() < cfg.min_labelled_keypoints or area < cfg.min_area:
            continue  # not drawn: every drawn person is annotated
        colour = _shade_window(
            body.parts,
            body.appearance,
            labels,
            window,
            rng,
            head_texture=lambda shape, b=body, win=window: _head_texture(b, win, shape),
        )
        image[y0:y1, x0:x1][visible] = np.clip(colour[visible], 0, 255).astype(np.uint8)
        part_class = np.array([0] + [p.part_class for p in body.parts], dtype=np.uint8)
        part_mask[y0:y1, x0:x1][visible] = part_class[labels[visible]]
        instance_mask[y0:y1, x0:x1][visible] = idx + 1  # remapped below
        covered[y0:y1, x0:x1] |= silhouette
        rows = np.flatnonzero(silhouette.any(1))
        cols = np.flatnonzero(silhouette.any(0))
        box = np.array(
            [
                x0 + cols[0] - 0.5,
                y0 + rows[0] - 0.5,
                cols[-1] - cols[0] + 1,
                rows[-1] - rows[0] + 1,
            ],
            dtype=np.float32,
        )
        kp = np.concatenate([body.keypoints, v[:, None]], axis=1).astype(np.float32)
        kp[v == 0] = 0.0
        kept[int(idx)] = (kp, box, float(area))

    order = sorted(kept)  # people keep their sampling order (independent of depth)
    remap = np.zeros(256, dtype=np.uint8)
    for new, old in enumerate(order):
        remap[old + 1] = new + 1
    instance_mask = remap[instance_mask]
    n = len(order)
    return {
        schema.IMAGE: image,
        schema.KEYPOINTS: np.stack([kept[i][0] for i in order]).astype(np.float32)
        if n
        else np.zeros((0, skeleton.NUM_KEYPOINTS, 3), np.float32),
        schema.BOXES: np.stack([kept[i][1] for i in order]) if n else np.zeros((0, 4), np.float32),
        schema.AREA: np.array([kept[i][2] for i in order], dtype=np.float32),
        schema.IGNORE: np.zeros(n, dtype=bool),
        schema.PART_MASK: part_mask[..., None],
        schema.INSTANCE_MASK: instance_mask[..., None],
    }
