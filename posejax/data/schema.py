"""The one example layout every dataset builder writes and every pipeline reads.

A stored example (what ``tfds.data_source(name)[split][i]`` returns) is a dict:

==================  ====================  ==========================================================
key                 shape / dtype         meaning
==================  ====================  ==========================================================
``image``           (H, W, 3) uint8       RGB image (PNG or JPEG bytes on disk, decoded by OpenCV)
``image_id``        () int64              dataset image id (COCO ids can exceed 32 bits)
``keypoints``       (P, 17, 3) float32    COCO-17 ``(x, y, v)`` per person, see posejax.skeleton
``boxes``           (P, 4) float32        person boxes ``(x, y, w, h)``
``area``            (P,) float32          person area in pixels (segmentation area when known)
``ignore``          (P,) bool             crowd / unannotated people: excluded from the loss
                                          (their box is masked) and ignored by the evaluator
``part_mask``       (H, W, 1) uint8       optional: body-part class per pixel (skeleton.BODY_PARTS)
``instance_mask``   (H, W, 1) uint8       optional: 0 background, ``i + 1`` for person ``i``
``head_boxes``      (P, 4) float32        optional (MPII): head box ``(x, y, w, h)`` for PCKh
``native_keypoints``(P, Kn, 3) float32    optional: the dataset's own joints, for its own metric
==================  ====================  ==========================================================

``P`` may be 0 (an image with no people). Optional keys are present for every example of a
dataset or for none; the pipeline carries whatever dense masks exist through the same geometric
transform as the image and never asks which dataset it reads.

A *batch* (what the grain pipeline yields, all fixed shapes, NumPy) is a dict:

==================  ========================  ================================================
key                 shape / dtype             meaning
==================  ========================  ================================================
``image``           (B, h, w, 3) uint8        network input
``keypoints``       (B, M, 17, 3) float32     people in input pixels; padding rows are zero
``boxes``           (B, M, 4) float32         transformed boxes (axis-aligned hull), xywh
``valid``           (B, M) bool               real, non-ignored person (False for padding)
``loss_mask``       (B, h, w) float32         0 inside ignored people's boxes, 1 elsewhere
``part_mask``       (B, h, w) int32           only when the dataset has one
``image_id``        (B,) int64
``person_index``    (B,) int32                top-down: which person of the image was cropped
``transform``       (B, 2, 3) float32         affine map original-image pixels -> input pixels
``scale``           (B,) float32              person scale in original pixels, for metrics
``weight``          (B,) float32              1 for real examples, 0 for padding in eval batches
==================  ========================  ================================================

In top-down mode ``M == 1`` and person 0 is the person the crop was made for (other people can
appear in the crop but are not targets). In bottom-up mode ``M`` is ``data.bottom_up.max_people``.
"""

from __future__ import annotations

IMAGE = "image"
IMAGE_ID = "image_id"
KEYPOINTS = "keypoints"
BOXES = "boxes"
AREA = "area"
IGNORE = "ignore"
PART_MASK = "part_mask"
INSTANCE_MASK = "instance_mask"
HEAD_BOXES = "head_boxes"
NATIVE_KEYPOINTS = "native_keypoints"

# The keys of a batch (the second table above); part_mask only when the dataset has one.
BATCH_KEYS: tuple[str, ...] = (
    IMAGE,
    KEYPOINTS,
    BOXES,
    "valid",
    "loss_mask",
    PART_MASK,
    IMAGE_ID,
    "person_index",
    "transform",
    "scale",
    "weight",
)

# Dense per-pixel labels the pipeline warps with nearest-neighbour interpolation.
DENSE_LABEL_KEYS: tuple[str, ...] = (PART_MASK, INSTANCE_MASK)
