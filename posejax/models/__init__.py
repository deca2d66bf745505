"""Backbones and ``PoseModel`` (backbone + head)."""

from posejax.models.backbone import ResNetBackbone
from posejax.models.pose_model import PoseModel

__all__ = ["PoseModel", "ResNetBackbone"]
