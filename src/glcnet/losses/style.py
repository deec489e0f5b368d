"""Style vector of a feature map: first- and second-order channel statistics (GLCNet global branch).

For ``F`` of shape ``[B, C, H, W]`` with ``HW`` positions::

    mu_c    = 1/HW sum_p F_c(p)
    var_c   = 1/HW sum_p (F_c(p) - mu_c)^2        (population variance)
    style   = [mu_1..mu_C, var_1..var_C]          -> [B, 2C]
    no style (ablation): [mu_1..mu_C]             -> [B, C]   (= SimCLR's global average pooling)
"""

from __future__ import annotations

import torch


def style_vector(feat: torch.Tensor, style: bool = True) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, 2C]`` (mean, variance over space) or ``[B, C]`` (mean only)."""
    flat = feat.flatten(2).to(torch.promote_types(feat.dtype, torch.float32))  # [B, C, HW], >= float32 (autocast)
    mean = flat.mean(dim=2)  # [B, C]
    if not style:
        return mean
    var = flat.var(dim=2, unbiased=False)  # [B, C]
    return torch.cat([mean, var], dim=1)  # [B, 2C]
