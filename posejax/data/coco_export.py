"""Schema examples -> COCO keypoint ground truth (a dict ``pycocotools.coco.COCO`` can load).

Works on any random-access source of :mod:`posejax.data.schema` examples: a
``tfds.data_source`` split, or a plain sequence of example dicts.

Conventions:

* Coordinates are copied unchanged, i.e. in posejax's pixel convention (pixel centres at
  integers, see :mod:`posejax.skeleton`), not COCO's (centres at ``+0.5``). OKS only uses
  differences and areas, so predictions exported in the same convention evaluate exactly.
* ``iscrowd`` is 1 for people with ``ignore`` set (pycocotools then ignores matches to them).
* Annotation ids run ``1, 2, ...`` over images in source order and people in array order, so
  they are unique and deterministic for a given source and ``num_images``; each annotation also
  carries ``person_index`` (its row in the example's arrays), which pycocotools ignores.
* ``file_name`` is ``"<image_id>.png"`` (nothing is written; the images live in the dataset).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from posejax import skeleton
from posejax.data import schema

PERSON_CATEGORY_ID = 1


def coco_categories() -> list[dict[str, Any]]:
    """The COCO person category with the 17 keypoint names and the 1-based skeleton."""
    return [
        {
            "id": PERSON_CATEGORY_ID,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(skeleton.COCO_KEYPOINTS),
            "skeleton": [[a + 1, b + 1] for a, b in skeleton.COCO_LIMBS],
        }
    ]


def split_to_coco(source: Sequence[dict], *, num_images: int | None = None) -> dict[str, Any]:
    """COCO keypoint ground truth for the first ``num_images`` examples of ``source``.

    Args:
      source: random-access examples with at least ``image`` (H, W, 3), ``image_id``,
        ``keypoints`` (P, 17, 3), ``boxes`` (P, 4) xywh, ``area`` (P,) and ``ignore`` (P,).
      num_images: how many examples from the start (all when None).

    Returns:
      ``{"info", "images", "annotations", "categories"}``; every image appears in ``images``
      even when it has no people.

    Raises:
      ValueError: two examples share an ``image_id``.
    """
    n = len(source) if num_images is None else min(int(num_images), len(source))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i in range(n):
        example = source[i]
        image_id = int(example[schema.IMAGE_ID])
        if image_id in seen:
            raise ValueError(f"duplicate image_id {image_id} (example {i})")
        seen.add(image_id)
        height, width = np.shape(example[schema.IMAGE])[:2]
        images.append(
            {
                "id": image_id,
                "width": int(width),
                "height": int(height),
                "file_name": f"{image_id}.png",
            }
        )
        keypoints = np.asarray(example[schema.KEYPOINTS], dtype=np.float32).reshape(
            -1, skeleton.NUM_KEYPOINTS, 3
        )
        boxes = np.asarray(example[schema.BOXES], dtype=np.float32).reshape(-1, 4)
        areas = np.asarray(example[schema.AREA], dtype=np.float32).reshape(-1)
        ignore = np.asarray(example[schema.IGNORE], dtype=bool).reshape(-1)
        for p in range(keypoints.shape[0]):
            kp = keypoints[p]
            flat: list[float | int] = []
            for x, y, v in kp.tolist():
                flat += [x, y, int(v)]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": PERSON_CATEGORY_ID,
                    "keypoints": flat,
                    "num_keypoints": int(np.count_nonzero(kp[:, 2] > 0)),
                    "bbox": boxes[p].tolist(),
                    "area": float(areas[p]),
                    "iscrowd": int(ignore[p]),
                    "person_index": p,
                }
            )
    return {
        "info": {"description": "posejax ground truth (posejax pixel convention)"},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }


def write_coco_json(source: Sequence[dict], path: str | os.PathLike, **kwargs) -> pathlib.Path:
    """Write :func:`split_to_coco` ``(source, **kwargs)`` to ``path`` (parents created)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(split_to_coco(source, **kwargs), f)
    return path
