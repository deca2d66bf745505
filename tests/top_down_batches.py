"""Top-down test batches with plausible random skeletons, shared by formulation tests."""

import numpy as np

INPUT_SIZE = (64, 48)  # (h, w)
B, M, K = 4, 2, 17

# A standing person facing the camera in a unit-height box: (x, y) per COCO-17 keypoint.
_TEMPLATE = np.array(
    [[0.50, 0.08], [0.53, 0.06], [0.47, 0.06], [0.57, 0.07], [0.43, 0.07],
     [0.65, 0.20], [0.35, 0.20], [0.72, 0.38], [0.28, 0.38], [0.75, 0.52],
     [0.25, 0.52], [0.60, 0.52], [0.40, 0.52], [0.62, 0.73], [0.38, 0.73],
     [0.63, 0.95], [0.37, 0.95]],
    dtype=np.float32,
)  # fmt: skip


def make_batch(seed: int = 0, *, drop: float = 0.15) -> dict[str, np.ndarray]:
    """Batch per posejax.data.schema with plausible random skeletons (B=4, M=2, 64x48)."""
    rng = np.random.default_rng(seed)
    h, w = INPUT_SIZE
    keypoints = np.zeros((B, M, K, 3), np.float32)
    boxes = np.zeros((B, M, 4), np.float32)
    for b in range(B):
        for m in range(M):
            height = rng.uniform(40, 56)
            centre = np.array([w / 2, h / 2]) + rng.uniform(-4, 4, 2) + (m * 12, 0)
            xy = (_TEMPLATE - 0.5) * height + centre + rng.normal(0, 1.5, (K, 2))
            xy = np.clip(xy, 0, [w - 1, h - 1])
            v = rng.choice([1.0, 2.0], K)
            v[rng.random(K) < drop] = 0
            keypoints[b, m] = np.concatenate([xy, v[:, None]], -1) * (v[:, None] > 0)
            lo, hi = xy[v > 0].min(0), xy[v > 0].max(0)
            boxes[b, m] = [*(lo - 2), *(hi - lo + 4)]
    return {
        "image": np.zeros((B, h, w, 3), np.uint8),
        "keypoints": keypoints,
        "boxes": boxes,
        "valid": np.array([[True, b % 2 == 0] for b in range(B)]),
        "loss_mask": np.ones((B, h, w), np.float32),
    }
