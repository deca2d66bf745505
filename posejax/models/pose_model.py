"""``PoseModel = backbone + head``: the only place the two are composed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# ImageNet statistics: a standard choice that keeps inputs roughly zero-mean, unit-variance.
# NumPy, not jnp: creating a jax array at import would start the backend before
# jax.distributed.initialize gets its chance (it must run first in multi-host jobs).
_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


class PoseModel(nnx.Module):
    """A backbone producing ``(B, H, W, C)`` features and a formulation's head on top.

    The model takes raw ``uint8`` images ``(B, h, w, 3)`` so the host ships bytes, not floats,
    and normalises inside the compiled step in the backbone's compute dtype.
    """

    def __init__(self, backbone: nnx.Module, head: nnx.Module, *, dtype=jnp.float32):
        self.backbone = backbone
        self.head = head
        self.dtype = dtype

    def __call__(self, images: jax.Array):
        x = ((images.astype(jnp.float32) - _MEAN) / _STD).astype(self.dtype)
        return self.head(self.backbone(x))
