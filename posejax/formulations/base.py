"""What a formulation is: target encoder + head + loss + decoder, nothing else.

Every formulation is a frozen dataclass built at the edge from its Hydra group
(``conf/formulation/<name>.yaml``) with the two numbers only known at run time, the backbone's
output ``stride`` and the network ``input_size``. The trainer, the pipeline and the evaluator
only ever call the four methods below and read ``input_mode``; none of them looks at which
formulation it holds.

Shape legend: ``B`` batch, ``M`` people slots per example, ``P`` detected people, ``K`` keypoints,
``L`` limbs, ``h, w`` input size, ``H, W`` output-map size (``h / stride``), ``C`` channels.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import numpy as np
from flax import nnx

from posejax import skeleton

Batch = Mapping[str, jax.Array]
Outputs = Any  # the head's pytree of arrays; each formulation documents its own
Targets = Any

TOP_DOWN = "top_down"
BOTTOM_UP = "bottom_up"
INPUT_MODES = (TOP_DOWN, BOTTOM_UP)


@dataclasses.dataclass(frozen=True)
class PosePrediction:
    """Decoded people of one image, in input-image pixels.

    Attributes:
      poses: ``(P, K, 3)`` float32, ``(x, y, score)`` per keypoint; score 0 means "not found".
      scores: ``(P,)`` float32 person scores (used to rank detections for OKS AP).
    """

    poses: np.ndarray
    scores: np.ndarray


@dataclasses.dataclass(frozen=True, kw_only=True)
class Formulation(abc.ABC):
    """Base class of the four formulations.

    Attributes:
      stride: output stride of the backbone features the head sits on.
      input_size: ``(h, w)`` of the network input.
      num_keypoints: ``K``; COCO-17 unless a formulation is used on a subset.
    """

    stride: int
    input_size: tuple[int, int]
    num_keypoints: int = skeleton.NUM_KEYPOINTS

    # "top_down" formulations see one person per example (person slot 0 is the target);
    # "bottom_up" ones see the full image with up to M people.
    input_mode: ClassVar[str] = TOP_DOWN

    @property
    def map_size(self) -> tuple[int, int]:
        """``(H, W)`` of the output maps."""
        h, w = self.input_size
        return h // self.stride, w // self.stride

    @abc.abstractmethod
    def make_head(self, in_channels: int, *, rngs: nnx.Rngs) -> nnx.Module:
        """Head module: backbone features ``(B, H, W, C)`` -> outputs pytree of float32 arrays.

        Heads compute in the dtype of the features they receive (``bfloat16`` under mixed
        precision, see ``common.promote_to_input_dtype``), keep float32 parameters, and cast
        their outputs to float32 so that losses are computed in full precision.
        """

    @abc.abstractmethod
    def encode(self, batch: Batch) -> Targets:
        """Training targets from a batch's keypoints (pure ``jnp``; runs inside ``jax.jit``)."""

    @abc.abstractmethod
    def loss(self, outputs: Outputs, targets: Targets) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar loss to minimise and a dict of named terms to log (each a scalar)."""

    @abc.abstractmethod
    def decode(self, outputs: Outputs) -> list[PosePrediction]:
        """Host-side: NumPy outputs of a batch -> one :class:`PosePrediction` per example."""

    @abc.abstractmethod
    def oracle_outputs(self, targets: Targets) -> Outputs:
        """What a perfect network would output: ``targets`` laid out as the head's outputs.

        ``decode(oracle_outputs(encode(batch)))`` measures the ceiling that the encoding, the
        decoding and (bottom-up) the parsing impose before any learning: the oracle rows of E1
        (``python -m posejax.evaluate RUN_DIR --oracle``).
        """

    def display_maps(self, outputs: Outputs) -> dict[str, np.ndarray]:
        """Named ``(B, H, W)`` or ``(B, H, W, 3)`` arrays worth looking at (for PNG summaries)."""
        return {}

    def dense_predictions(self, outputs: Outputs) -> np.ndarray | None:
        """``(B, H, W)`` int class map for formulations that label pixels (mIoU), else None."""
        return None

    def dense_targets(self, targets: Targets) -> np.ndarray | None:
        """``(B, H, W)`` int class map the dense predictions are scored against, else None."""
        return None
