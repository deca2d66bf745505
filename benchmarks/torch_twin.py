"""posejax's default networks written once more in PyTorch, for ``bench_vs_torch.py`` only.

Not part of posejax (torch is an optional extra: ``pip install -e .[bench]``, a CPU build) and
never imported by ``posejax/`` or ``tests/``. Each twin is built from the same ``Setup`` as the
posejax step it is timed against, and does the same work per step: normalise the uint8 images,
encode the targets from the keypoints, forward, masked squared error, backward, global-norm
clipping, AdamW with the same learning-rate schedule.

* backbone: stem (two ConvNormAct, the first stride 2), basic-block stages with GroupNorm, lateral
  1x1 projections merged top-down with nearest 2x upsampling, a smoothing ConvNormAct
  (``posejax/models/backbone.py``);
* heads: ``ConvHead`` (``posejax/formulations/common.py``) for the heatmap network, the two-branch
  multi-stage ``PafHead`` (``posejax/formulations/paf.py``) for the bottom-up network;
* encoders and losses: ``GaussianHeatmap`` and ``PartAffinityFields``, same formulas.

Torch computes in NCHW (its default layout): the uint8 ``(B, h, w, 3)`` batch is normalised and
permuted inside the step, as posejax normalises inside its compiled step. Shape legend: ``B``
batch, ``M`` people slots, ``K`` keypoints, ``L`` limbs, ``H, W`` map size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from posejax.formulations.heatmap import GaussianHeatmap
from posejax.formulations.paf import PartAffinityFields

_MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255.0
_STD = torch.tensor([0.229, 0.224, 0.225]) * 255.0


def _groups(channels: int, preferred: int) -> int:
    """The group count posejax picks: the largest divisor of ``channels`` <= ``preferred``."""
    groups = min(preferred, channels)
    while channels % groups:
        groups -= 1
    return groups


class ConvNormAct(nn.Module):
    def __init__(self, cin: int, cout: int, *, kernel=3, stride=1, act=True, groups=8):
        super().__init__()
        # padding k // 2 gives XLA's SAME output size (ceil(n / stride)) for k = 1 and 3.
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)
        self.norm = nn.GroupNorm(_groups(cout, groups), cout, eps=1e-6)  # flax's epsilon
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return F.relu(x) if self.act else x


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, *, stride: int, groups: int):
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, stride=stride, groups=groups)
        self.conv2 = ConvNormAct(cout, cout, act=False, groups=groups)
        needs_projection = stride != 1 or cin != cout
        self.shortcut = (
            ConvNormAct(cin, cout, kernel=1, stride=stride, act=False, groups=groups)
            if needs_projection
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv2(self.conv1(x)) + residual)


class Backbone(nn.Module):
    """``(B, 3, h, w)`` -> ``(B, out_channels, h / output_stride, w / output_stride)``."""

    def __init__(
        self,
        *,
        stem_width: int,
        widths: Sequence[int],
        blocks: Sequence[int],
        strides: Sequence[int],
        output_stride: int,
        out_channels: int,
        groups: int,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            ConvNormAct(3, stem_width, stride=2, groups=groups),
            ConvNormAct(stem_width, stem_width, groups=groups),
        )
        stages, stage_strides, cin, current = [], [], stem_width, 2
        for width, n, s in zip(widths, blocks, strides, strict=True):
            layers = [BasicBlock(cin, width, stride=s, groups=groups)]
            layers += [BasicBlock(width, width, stride=1, groups=groups) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            current *= s
            stage_strides.append(current)
            cin = width
        self.stages = nn.ModuleList(stages)
        first = stage_strides.index(output_stride)
        last = max(i for i, s in enumerate(stage_strides) if s == stage_strides[-1])
        self.merge_from = first
        self.laterals = nn.ModuleList(
            [nn.Conv2d(widths[i], out_channels, 1) for i in range(first, last + 1)]
        )
        self.smooth = ConvNormAct(out_channels, out_channels, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        merged = None
        for lateral, feat in zip(
            reversed(self.laterals), reversed(features[self.merge_from :]), strict=True
        ):
            proj = lateral(feat)
            if merged is None:
                merged = proj
            else:
                if merged.shape[2] != proj.shape[2]:
                    merged = F.interpolate(merged, scale_factor=2, mode="nearest")
                    merged = merged[:, :, : proj.shape[2], : proj.shape[3]]
                merged = merged + proj
        return self.smooth(merged)


class ConvHead(nn.Module):
    """``depth`` 3x3 conv + ReLU, then a 1x1 conv (biases, as nnx.Conv's default)."""

    def __init__(self, cin: int, hidden: int, cout: int, *, depth: int):
        super().__init__()
        layers, ch = [], cin
        for _ in range(depth):
            layers += [nn.Conv2d(ch, hidden, 3, padding=1), nn.ReLU()]
            ch = hidden
        layers.append(nn.Conv2d(ch, cout, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class PafHead(nn.Module):
    """Stage ``t > 1`` sees ``cat(F, S^{t-1}, L^{t-1})``; returns per-stage ``(S, L)`` lists."""

    def __init__(self, cin: int, *, keypoints: int, limbs: int, stages: int, channels, depth):
        super().__init__()
        self.heatmap_branches = nn.ModuleList()
        self.paf_branches = nn.ModuleList()
        for stage in range(stages):
            stage_in = cin + (keypoints + 2 * limbs if stage else 0)
            self.heatmap_branches.append(ConvHead(stage_in, channels, keypoints, depth=depth))
            self.paf_branches.append(ConvHead(stage_in, channels, 2 * limbs, depth=depth))

    def forward(self, features: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        heatmaps, pafs, x = [], [], features
        for heatmap_branch, paf_branch in zip(
            self.heatmap_branches, self.paf_branches, strict=True
        ):
            heatmap, paf = heatmap_branch(x), paf_branch(x)
            heatmaps.append(heatmap)
            pafs.append(paf)
            x = torch.cat([features, heatmap, paf], dim=1)
        return heatmaps, pafs


# ------------------------------------------------------------------ targets and losses


def _to_map(xy: torch.Tensor, stride: int) -> torch.Tensor:
    return (xy - (stride - 1) / 2.0) / stride  # posejax.geometry.image_to_map


def gaussian_maps(
    xy: torch.Tensor, present: torch.Tensor, map_size: tuple[int, int], sigma: float
) -> torch.Tensor:
    """``(B, M, K, 2)`` map-pixel keypoints -> ``(B, K, H, W)``, maximum over people."""
    h, w = map_size
    gx = torch.exp(-((torch.arange(w) - xy[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, M, K, W)
    gy = torch.exp(-((torch.arange(h) - xy[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, M, K, H)
    maps = gy[..., :, None] * gx[..., None, :]
    return torch.where(present[..., None, None], maps, 0.0).amax(dim=1)


def min_pool(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """``(B, h, w)`` -> ``(B, h / stride, w / stride)`` (posejax ``downsample_mask``)."""
    return -F.max_pool2d(-mask[:, None], stride)[:, 0]


def part_affinity_fields(
    xy: torch.Tensor,
    present: torch.Tensor,
    limbs: np.ndarray,
    map_size: tuple[int, int],
    limb_width: float,
    end_margin: float,
) -> torch.Tensor:
    """``(B, M, K, 2)`` -> ``(B, 2L, H, W)`` fields, channel ``2 l + c`` as posejax's head."""
    h, w = map_size
    start, end = xy[:, :, limbs[:, 0]], xy[:, :, limbs[:, 1]]  # (B, M, L, 2)
    delta = end - start
    length = delta.norm(dim=-1)
    on_limb = present[:, :, limbs[:, 0]] & present[:, :, limbs[:, 1]] & (length > 1e-6)
    direction = delta / length.clamp_min(1e-6)[..., None]
    rel_x = torch.arange(w, dtype=torch.float32) - start[..., 0, None, None]  # (B, M, L, 1, W)
    rel_y = torch.arange(h, dtype=torch.float32)[:, None] - start[..., 1, None, None]
    ux, uy = direction[..., 0, None, None], direction[..., 1, None, None]
    along = rel_x * ux + rel_y * uy  # (B, M, L, H, W)
    across = (rel_x * uy - rel_y * ux).abs()
    inside = (
        on_limb[..., None, None]
        & (along >= -end_margin)
        & (along <= length[..., None, None] + end_margin)
        & (across <= limb_width)
    ).float()
    count = inside.sum(dim=1)  # (B, L, H, W)
    total = torch.einsum("bmlhw,bmlc->blchw", inside, direction)
    fields = total / count.clamp_min(1.0)[:, :, None]
    return fields.reshape(fields.shape[0], -1, h, w)


class TorchTwin:
    """Model + optimizer + one train step, mirroring posejax's step for ``formulation``.

    Args:
      formulation: the posejax ``GaussianHeatmap`` or ``PartAffinityFields`` of the setup.
      backbone: the ``conf/backbone`` fields (``stem_width``, ``widths``, ...).
      clip_norm, lr, weight_decay: ``OptimConfig`` values; ``lr_schedule`` gives the learning
        rate of every step (the posejax schedule evaluated beforehand).
      channels_last: run convolutions in NHWC memory format (torch's opt-in CPU layout).
    """

    def __init__(
        self,
        formulation,
        backbone: dict,
        *,
        clip_norm: float,
        weight_decay: float,
        lr_schedule: np.ndarray,
        channels_last: bool = False,
        seed: int = 0,
    ):
        torch.manual_seed(seed)
        self.formulation = formulation
        self.stride = int(backbone["output_stride"])
        self.backbone = Backbone(**{k: v for k, v in backbone.items() if k != "_target_"})
        cin = int(backbone["out_channels"])
        if isinstance(formulation, GaussianHeatmap):
            self.head = ConvHead(
                cin,
                formulation.head_channels,
                formulation.num_keypoints,
                depth=formulation.head_depth,
            )
        elif isinstance(formulation, PartAffinityFields):
            self.limbs = np.asarray(formulation.limbs, np.int64)
            self.head = PafHead(
                cin,
                keypoints=formulation.num_keypoints,
                limbs=len(formulation.limbs),
                stages=formulation.stages,
                channels=formulation.stage_channels,
                depth=formulation.stage_depth,
            )
        else:
            raise TypeError(f"no torch twin for {type(formulation).__name__}")
        self.model = nn.Sequential(self.backbone, self.head)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.clip_norm = clip_norm
        self.lr_schedule = lr_schedule
        self.step_count = 0
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=float(lr_schedule[0]), weight_decay=weight_decay, eps=1e-8
        )

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @staticmethod
    def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}

    def _encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        f, stride = self.formulation, self.stride
        keypoints = batch["keypoints"].float()
        xy = _to_map(keypoints[..., :2], stride)
        present = (keypoints[..., 2] > 0) & batch["valid"].bool()[..., None]  # (B, M, K)
        mask = min_pool(batch["loss_mask"].float(), stride)
        if isinstance(f, GaussianHeatmap):
            return {
                "heatmaps": gaussian_maps(xy, present, f.map_size, f.sigma),
                "joint_weight": present.any(dim=1).float(),  # (B, K)
                "pixel_weight": mask,
            }
        margin = f.limb_width if f.extend_limb_ends else 0.0
        return {
            "heatmaps": gaussian_maps(xy, present, f.map_size, f.sigma),
            "pafs": part_affinity_fields(xy, present, self.limbs, f.map_size, f.limb_width, margin),
            "mask": mask,
        }

    def _loss(self, outputs, targets) -> torch.Tensor:
        if isinstance(self.formulation, GaussianHeatmap):
            weight = targets["joint_weight"][:, :, None, None] * targets["pixel_weight"][:, None]
            se = weight * (outputs - targets["heatmaps"]) ** 2
            return se.sum() / targets["joint_weight"].sum().clamp_min(1.0)
        heatmaps, pafs = outputs
        alpha, mask = self.formulation.foreground_weight, targets["mask"]
        pixels = mask.sum().clamp_min(1.0)
        heatmap_weight = mask[:, None] * (1.0 + alpha * targets["heatmaps"])
        b, c, h, w = targets["pafs"].shape
        paf_target = targets["pafs"].reshape(b, c // 2, 2, h, w)
        paf_weight = mask[:, None, None] * (1.0 + alpha * paf_target.norm(dim=2, keepdim=True))
        loss = 0.0
        for heatmap, paf in zip(heatmaps, pafs, strict=True):
            loss = loss + ((heatmap - targets["heatmaps"]) ** 2 * heatmap_weight).sum() / (
                pixels * heatmap.shape[1]
            )
            paf_error = (paf.reshape(b, c // 2, 2, h, w) - paf_target) ** 2
            loss = loss + (paf_error * paf_weight).sum() / (pixels * c)
        return loss

    def train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One update on a batch of tensors (``to_tensors``); returns the detached loss (eager
        torch has finished the step when this returns: nothing left to wait for)."""
        with torch.no_grad():
            images = (batch["image"].float() - _MEAN) / _STD  # (B, h, w, 3)
            images = images.permute(0, 3, 1, 2).contiguous(memory_format=self.memory_format)
            targets = self._encode(batch)
        loss = self._loss(self.model(images), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        lr = float(self.lr_schedule[min(self.step_count, len(self.lr_schedule) - 1)])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step_count += 1
        return loss.detach()
