"""Local matching contrast of GLCNet: RoI-pooled decoder features of matched patches.

``pool_patches``: each box ``(x0, y0, x1, y1)`` (continuous view-pixel coordinates) is
mapped to the feature map by ``spatial_scale`` (0.25: the decoder map is at 1/4 of the
view resolution), bilinearly sampled on an ``out x out`` grid (``torchvision.ops.roi_align``,
``aligned=True``, adaptive sampling) and averaged: ``v = 1/out^2 sum_{cells} roi_align(F, box)``,
about the mean of ``F`` over the box (exactly, for boxes on the cell grid).

``LocalMatchingLoss``: NT-Xent (``glcnet.losses.ntxent``) over the ``B x P`` patch pairs
``(z1[b, p], z2[b, p])``; every other valid patch of every image (and every rank) is a
negative; invalid patches (``valid[b, p]`` false) are neither anchors nor negatives.
With ``fn_topk`` > 0 the ``fn_topk`` patches most similar to the anchor's positive are not
negatives (false-negative-aware local term, :mod:`glcnet.losses.false_negatives`).
"""

from __future__ import annotations

import torch
from torch import nn

from glcnet.losses.ntxent import NTXentLoss
from glcnet.utils.dist import Gather, no_gather


def pool_patches(feat: torch.Tensor, boxes: torch.Tensor, spatial_scale: float = 0.25,
                 out: int = 4) -> torch.Tensor:
    """Mean feature in each box: ``feat [B, C, h, w]``, ``boxes [B, P, 4]`` -> ``[B, P, C]``."""
    from torchvision.ops import roi_align  # imported here: torchvision adds seconds to `import glcnet.losses`

    b, p = boxes.shape[:2]
    idx = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(p)  # [B*P]
    rois = torch.cat([idx[:, None], boxes.reshape(b * p, 4)], dim=1)  # [B*P, 5] (batch index, box)
    pooled = roi_align(feat, rois.to(feat.dtype), output_size=out, spatial_scale=spatial_scale,
                       sampling_ratio=0, aligned=True)  # [B*P, C, out, out]
    return pooled.mean(dim=(2, 3)).reshape(b, p, -1)  # [B, P, C]


class LocalMatchingLoss(nn.Module):
    """NT-Xent over all valid ``B x P`` patch pairs (see module doc)."""

    def __init__(self, temperature: float = 0.5, fn_topk: int = 0):
        super().__init__()
        self.ntxent = NTXentLoss(temperature, fn_topk)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, valid: torch.Tensor | None = None,
                gather: Gather = no_gather) -> torch.Tensor:
        """``z1, z2 [B, P, d]`` (patch embeddings of view 1 / view 2), ``valid [B, P]``."""
        flat_valid = None if valid is None else valid.reshape(-1)  # [B*P]
        return self.ntxent(z1.flatten(0, 1), z2.flatten(0, 1), gather, flat_valid)
