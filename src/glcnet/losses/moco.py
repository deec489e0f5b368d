"""InfoNCE with a queue of negatives, as in MoCo v2 (He et al. 2020; Chen et al. 2020).

Queries ``q [N, d]`` and their positive keys ``k [N, d]`` (from the momentum encoder,
no gradient), a queue ``Q [K, d]`` of past keys; all L2-normalised; temperature ``t``::

    l_i  = -log( exp(q_i . k_i / t) / (exp(q_i . k_i / t) + sum_{j<K} exp(q_i . Q_j / t)) )
    loss = mean_i l_i

i.e. cross entropy over ``[positive, K negatives]`` with label 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glcnet.errors import GlcnetError


class MoCoInfoNCE(nn.Module):
    """``loss = mean_i CE([q_i.k_i, q_i.Q_1..Q_K] / t, 0)`` (see module doc)."""

    def __init__(self, temperature: float = 0.2):
        super().__init__()
        if temperature <= 0:
            raise GlcnetError(f"InfoNCE temperature (method.moco_temperature) must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        with torch.autocast(q.device.type, enabled=False):  # logits in float32 under AMP
            return self._loss(q, k, queue)

    def _loss(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        q = F.normalize(q.float(), dim=1)  # [N, d]
        k = F.normalize(k.float(), dim=1).detach()  # [N, d]
        queue = F.normalize(queue.float(), dim=1).detach()  # [K, d]
        pos = (q * k).sum(dim=1, keepdim=True)  # [N, 1]
        neg = q @ queue.T  # [N, K]
        logits = torch.cat([pos, neg], dim=1) / self.temperature  # [N, 1 + K]
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)
