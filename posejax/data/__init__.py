"""Datasets (TFDS builders, registered on import) and the grain input pipeline.

Importing this package registers the builders ``synthetic_people``, ``coco_keypoints``,
``mpii_human_pose`` and ``lsp`` with TFDS. Nothing here imports TensorFlow.
"""

from posejax.data import coco, lsp, mpii, synthetic  # noqa: F401  (registers the builders)
