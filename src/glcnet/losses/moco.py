"""InfoNCE with a queue of negatives, as in MoCo v2 (He et al. 2020; Chen et al. 2020).

Queries ``q [N, d]`` and their positive keys ``k [N, d]`` (from the momentum encoder,
no gradient), a queue ``Q [K, d]`` of past keys; all L2-normalised; temperature ``t``::

    l_i  = -log( exp(q_i . k_i / t) / (exp(q_i . k_i / t) + sum_{j<K} exp(q_i . Q_j / t)) )
    loss = mean_i l_i                 over the valid i of all ranks

i.e. cross entropy over ``[positive, K negatives]`` with label 0 (lightly's
``NTXentLoss(memory_bank_size=...)`` computes the same; the test checks it). It is not
used here because that loss pushes its own positives into its bank inside each call:
the second direction of a symmetric loss would see the first one's keys as negatives.

``valid`` ([N] bool, optional): rows that are not anchors (GLCNet-M's patches outside the
views' overlap). Under DDP each rank's sum is divided by the global count of valid rows
times the world size, so the mean over ranks is the loss of the concatenated batch.
``fn_topk`` > 0: the ``fn_topk`` queue rows most similar to ``k_i`` are not negatives of
``q_i`` (false-negative-aware term, :mod:`glcnet.losses.false_negatives`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glcnet.errors import GlcnetError
from glcnet.losses.false_negatives import false_negatives
from glcnet.utils.dist import Gather, no_gather


class MoCoInfoNCE(nn.Module):
    """``loss = mean_i CE([q_i.k_i, q_i.Q_1..Q_K] / t, 0)`` (see module doc)."""

    def __init__(self, temperature: float = 0.2, fn_topk: int = 0):
        super().__init__()
        if temperature <= 0:
            raise GlcnetError(f"InfoNCE temperature (method.moco_temperature) must be > 0, got {temperature}")
        if fn_topk < 0:
            raise GlcnetError(f"method.fn_topk must be >= 0, got {fn_topk}")
        self.temperature = temperature
        self.fn_topk = fn_topk

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, valid: torch.Tensor | None = None,
                gather: Gather = no_gather) -> torch.Tensor:
        with torch.autocast(q.device.type, enabled=False):  # logits in float32 under AMP
            return self._loss(q, k, queue, valid, gather)

    def _loss(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, valid: torch.Tensor | None,
              gather: Gather) -> torch.Tensor:
        q = F.normalize(q.float(), dim=1)  # [N, d]
        k = F.normalize(k.float(), dim=1).detach()  # [N, d]
        queue = F.normalize(queue.float(), dim=1).detach()  # [K, d]
        pos = (q * k).sum(dim=1, keepdim=True)  # [N, 1]
        neg = q @ queue.T  # [N, K]
        if self.fn_topk > 0:
            neg = neg.masked_fill(false_negatives(k @ queue.T, self.fn_topk), float("-inf"))
        logits = torch.cat([pos, neg], dim=1) / self.temperature  # [N, 1 + K]
        per_anchor = -F.log_softmax(logits, dim=1)[:, 0]  # [N] (no lse - pos cancellation)
        if valid is None:
            valid = torch.ones(q.shape[0], dtype=torch.bool, device=q.device)
        counts = gather(valid.sum().float().reshape(1))  # [world] valid anchors per rank
        return per_anchor[valid].sum() * counts.numel() / counts.sum().clamp(min=1)
