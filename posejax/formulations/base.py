"""What a formulation is: target encoder + head + loss + decoder, nothing else.

Every formulation is a frozen dataclass built at the edge from its Hydra group
(``conf/formulation/<name>.yaml``) with the two numbers only known at run time, the backbone's
output ``stride`` and the network ``input_size``. The trainer, the pipeline, the evaluator, the
runners and the experiment tools only ever use the contract below; none of them looks at which
formulation it holds.

The contract (``tests/formulations/test_contract.py`` checks it for every
``conf/formulation/*.yaml``):

* ``input_mode``: top-down (one person crop per example) or bottom-up (the whole image).
* ``batch_keys``: the batch keys ``encode`` reads (:meth:`Formulation.encoder_batch` selects them,
  and names the missing ones), like the auxiliary keys a codec declares in mmpose.
* ``make_head`` / ``encode`` / ``loss`` / ``decode`` / ``oracle_outputs``: the four parts, and
  what a perfect network would output.
* Stages: outputs named in ``staged_outputs`` carry a leading stage axis, ``(S, B, ...)`` with
  ``S = num_stages``; every other output is ``(B, ...)``. ``decode`` and ``display_maps`` take
  ``stage=`` (an index into that axis, ``-1`` the last) in every formulation; one without stages
  has ``num_stages == 1`` and accepts ``stage`` ``-1`` or ``0`` only (:meth:`stage_index`).
* Display: ``display_specs`` names the maps ``display_maps`` returns and says how each is drawn
  (:class:`DisplayMap`).
* What is predicted: ``predicts_keypoints`` (poses, scored by OKS AP and PCK) and
  ``predicts_boxes`` (``PosePrediction.boxes``, scored by COCO box AP); the evaluator reports
  the metrics of what a formulation declares.
* Dense labels: ``num_dense_classes`` is the number of classes of ``dense_predictions`` and
  ``dense_targets`` (what mIoU is computed over); 0 for formulations that do not label pixels.

Shape legend: ``B`` batch, ``M`` people slots per example, ``P`` detected people, ``K`` keypoints,
``L`` limbs, ``S`` stages, ``h, w`` input size, ``H, W`` output-map size (``h / stride``), ``C``
channels.
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

DISPLAY_KINDS = ("intensity", "labels", "rgb")  # how a display map is drawn (DisplayMap.kind)


@dataclasses.dataclass(frozen=True)
class DisplayMap:
    """How one of a formulation's display maps is drawn.

    Attributes:
      kind: ``"intensity"``: float ``(B, H, W)``, 0 = nothing, about 1 = sure (drawn through a
        colour ramp); ``"labels"``: int ``(B, H, W)`` class indices in ``[0, num_classes)``
        (one colour per class, 0 black); ``"rgb"``: float ``(B, H, W, 3)`` in ``[0, 1]``,
        drawn as it is.
      num_classes: the number of classes of a ``"labels"`` map (0 otherwise).
    """

    kind: str
    num_classes: int = 0

    def __post_init__(self):
        if self.kind not in DISPLAY_KINDS:
            raise ValueError(f"DisplayMap kind must be one of {DISPLAY_KINDS}, got {self.kind!r}")
        if (self.kind == "labels") != (self.num_classes > 0):
            raise ValueError("a labels map needs num_classes > 0, other kinds num_classes = 0")

    @classmethod
    def intensity(cls) -> DisplayMap:
        return cls("intensity")

    @classmethod
    def labels(cls, num_classes: int) -> DisplayMap:
        return cls("labels", num_classes)

    @classmethod
    def rgb(cls) -> DisplayMap:
        return cls("rgb")


@dataclasses.dataclass(frozen=True)
class PosePrediction:
    """Decoded people of one image, in input-image pixels.

    Attributes:
      poses: ``(P, K, 3)`` float32, ``(x, y, score)`` per keypoint; score 0 means "not found".
      scores: ``(P,)`` float32 person scores (used to rank detections for OKS and box AP).
      boxes: ``(P, 4)`` float32 person boxes ``(x, y, w, h)``, from formulations that predict
        boxes (``Formulation.predicts_boxes``); None from the others.
    """

    poses: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Formulation(abc.ABC):
    """Base class of the formulations.

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

    # Output keys with a leading stage axis (S, B, ...); the others are (B, ...).
    staged_outputs: ClassVar[tuple[str, ...]] = ()

    # What the decoded predictions carry: keypoints (scored by OKS AP and PCK) and/or person
    # boxes (``PosePrediction.boxes``, scored by COCO box AP). A person detector has boxes only.
    predicts_keypoints: ClassVar[bool] = True
    predicts_boxes: ClassVar[bool] = False

    @property
    def map_size(self) -> tuple[int, int]:
        """``(H, W)`` of the output maps."""
        h, w = self.input_size
        return h // self.stride, w // self.stride

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """The batch keys :meth:`encode` reads (:mod:`posejax.data.schema`'s batch layout)."""
        return ("keypoints", "valid", "loss_mask")

    @property
    def num_stages(self) -> int:
        """``S``, the length of the stage axis of :attr:`staged_outputs` (1 without stages)."""
        return 1

    @property
    def people_threshold(self) -> float:
        """Person score from which a decoded prediction counts as a person found (0: all).

        The evaluator's ``people_found_ratio`` counts these; a decoder that returns low-scored
        candidates for AP's sake (the detector) raises it.
        """
        return 0.0

    @property
    def num_dense_classes(self) -> int:
        """Classes of :meth:`dense_predictions` / :meth:`dense_targets`; 0: no pixel labels."""
        return 0

    @property
    def display_specs(self) -> dict[str, DisplayMap]:
        """The maps :meth:`display_maps` returns, by name, and how each is drawn."""
        return {}

    def encoder_batch(self, batch: Batch) -> dict[str, Any]:
        """The part of ``batch`` that :meth:`encode` reads (:attr:`batch_keys`).

        Raises:
          ValueError: naming the declared keys the batch lacks.
        """
        missing = [key for key in self.batch_keys if key not in batch]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the batch keys {missing} (it reads "
                f"{list(self.batch_keys)}); this batch has {sorted(batch)}"
            )
        return {key: batch[key] for key in self.batch_keys}

    def stage_index(self, stage: int) -> int:
        """``stage`` (an index into the stage axis, negative from the end) as ``0 .. S - 1``.

        Raises:
          ValueError: ``stage`` is not an integer in ``-S .. S - 1``.
        """
        n = self.num_stages
        integer = isinstance(stage, int | np.integer) and not isinstance(stage, bool)
        if not (integer and -n <= stage < n):
            raise ValueError(
                f"{type(self).__name__} has {n} stage(s): stage must be an integer in "
                f"{-n}..{n - 1} (-1 = the last), got {stage!r}"
            )
        return int(stage) % n

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
    def decode(self, outputs: Outputs, *, stage: int = -1) -> list[PosePrediction]:
        """Host-side: NumPy outputs of a batch -> one :class:`PosePrediction` per example.

        ``stage`` picks the stage whose outputs are decoded (:meth:`stage_index`: ``-1`` or
        ``0`` only for a formulation without stages).
        """

    @abc.abstractmethod
    def oracle_outputs(self, targets: Targets) -> Outputs:
        """What a perfect network would output: ``targets`` laid out as the head's outputs.

        ``decode(oracle_outputs(encode(batch)))`` measures the ceiling that the encoding, the
        decoding and (bottom-up) the parsing impose before any learning: the oracle rows of E1
        (``python -m posejax.evaluate RUN_DIR --oracle``).
        """

    def display_maps(self, outputs: Outputs, *, stage: int = -1) -> dict[str, np.ndarray]:
        """Named ``(B, H, W)`` or ``(B, H, W, 3)`` arrays worth looking at (for PNG summaries).

        Exactly the names of :attr:`display_specs`, laid out as their :class:`DisplayMap` says;
        ``stage`` as in :meth:`decode`.
        """
        self.stage_index(stage)
        return {}

    def dense_predictions(self, outputs: Outputs) -> np.ndarray | None:
        """``(B, H, W)`` int class map in ``[0, num_dense_classes)`` (mIoU), else None."""
        return None

    def dense_targets(self, targets: Targets) -> np.ndarray | None:
        """``(B, H, W)`` int class map the dense predictions are scored against, else None."""
        return None
