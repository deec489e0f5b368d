"""NT-Xent (normalised temperature-scaled cross entropy) of SimCLR (Chen et al., ICML 2020).

For ``N`` positive pairs ``(z1_i, z2_i)`` stack the ``2N`` L2-normalised embeddings
``u = [z1; z2]``; with cosine similarity ``s(a, b) = u_a . u_b`` and temperature ``t``,
the positive of anchor ``i`` is ``j(i) = i +- N`` and::

    l_i  = -log( exp(s(i, j(i)) / t) / sum_{k != i} exp(s(i, k) / t) )
    loss = mean_i l_i            over the 2N anchors

Global batch (DDP): ``gather`` all-gathers embeddings with gradient; the anchors are the
local rows, the keys (positive + negatives) are all rows of all ranks. The loss is
normalised by the *global* anchor count so that the mean over ranks (what DDP's
gradient averaging optimises) equals the one-process loss on the concatenated batch.

``valid`` ([N] bool, optional) drops pairs: an invalid pair is neither an anchor nor a
negative (used by the local matching loss for patches outside the views' overlap).

``fn_topk`` > 0 removes false negatives (:mod:`glcnet.losses.false_negatives`): the key of
anchor ``i`` is its positive ``u_j(i)``, and the ``fn_topk`` other rows ``k`` with the largest
``u_j(i) . u_k`` leave its denominator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glcnet.errors import GlcnetError
from glcnet.losses.false_negatives import false_negatives
from glcnet.utils import dist
from glcnet.utils.dist import Gather, no_gather


class NTXentLoss(nn.Module):
    """``loss = mean over anchors of -log softmax_{k != i}(s(i, k) / t)[j(i)]`` (see module doc)."""

    def __init__(self, temperature: float = 0.5, fn_topk: int = 0):
        super().__init__()
        if temperature <= 0:
            raise GlcnetError(f"NT-Xent temperature (method.temperature) must be > 0, got {temperature}")
        if fn_topk < 0:
            raise GlcnetError(f"method.fn_topk must be >= 0, got {fn_topk}")
        self.temperature = temperature
        self.fn_topk = fn_topk

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, gather: Gather = no_gather,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(z1.device.type, enabled=False):  # similarities in float32 under AMP
            return self._loss(z1, z2, gather, valid)

    def _loss(self, z1: torch.Tensor, z2: torch.Tensor, gather: Gather,
              valid: torch.Tensor | None) -> torch.Tensor:
        n = z1.shape[0]
        z1 = F.normalize(z1.float(), dim=1)  # [n, d]
        z2 = F.normalize(z2.float(), dim=1)  # [n, d]
        k1, k2 = gather(z1), gather(z2)  # [M, d], M = world * n
        m = k1.shape[0]
        offset = dist.rank() * n if m != n else 0  # first global row of this rank
        keys = torch.cat([k1, k2])  # [2M, d]
        anchors = torch.cat([z1, z2])  # [2n, d]
        logits = anchors @ keys.T / self.temperature  # [2n, 2M]

        idx = torch.arange(n, device=z1.device) + offset
        self_idx = torch.cat([idx, idx + m])  # [2n] column of the anchor itself
        pos_idx = torch.cat([idx + m, idx])  # [2n] column of its positive
        drop = F.one_hot(self_idx, 2 * m).bool()  # [2n, 2M]
        if valid is None:
            valid = torch.ones(n, dtype=torch.bool, device=z1.device)
        key_ok = gather(valid.float()) > 0.5  # [M]
        drop |= ~torch.cat([key_ok, key_ok])[None, :]
        if self.fn_topk > 0:
            pos = F.one_hot(pos_idx, 2 * m).bool()  # [2n, 2M]
            key_sim = keys[pos_idx].detach() @ keys.detach().T  # [2n, 2M] positive . every row
            drop |= false_negatives(key_sim, self.fn_topk, candidates=~(drop | pos))
        logits = logits.masked_fill(drop, float("-inf"))

        keep = torch.cat([valid, valid])  # [2n] anchors used
        logits, pos_idx = logits[keep], pos_idx[keep]  # [A, 2M], [A]
        per_anchor = torch.logsumexp(logits, dim=1) - logits.gather(1, pos_idx[:, None])[:, 0]  # [A]
        # global anchor count; ranks = gathered counts' length
        counts = gather(keep.sum().float().reshape(1))  # [world]
        return per_anchor.sum() * counts.numel() / counts.sum().clamp(min=1)
