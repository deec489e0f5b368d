"""Mean squared error on masked pixels only (inpainting / context encoder, Pathak et al. 2016).

``pred, target [B, C, H, W]``, ``mask [B, 1, H, W]`` (or ``[B, H, W]``), 1 = masked (to
reconstruct)::

    loss = sum_{b,c,y,x} m_{b,y,x} (pred - target)^2 / (C * sum_{b,y,x} m_{b,y,x})
"""

from __future__ import annotations

import torch
from torch import nn


class MaskedMSELoss(nn.Module):
    """Mean of ``(pred - target)^2`` over the masked pixels and all bands (see module doc)."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.reshape(mask.shape[0], 1, *mask.shape[-2:]).float()  # [B, 1, H, W]
        sq = (pred.float() - target.float()) ** 2 * m  # [B, C, H, W]
        return sq.sum() / (m.sum() * pred.shape[1]).clamp(min=1)
