"""False-negative removal for the local contrast: similar patches are not pushed away.

Patch contrast treats every other patch as a negative, but in a scene of a few classes
many of them show the same thing as the anchor (road next to road, roof next to roof):
pushing them apart fights the segmentation the features are for (FALSE, Zhang et al.,
IEEE GRSL 2022, is a remote-sensing method built on that observation). Here, for anchor
``a`` with positive key ``k_a`` and candidate negatives ``n_c`` (all L2-normalised), the
``topk`` candidates most similar to the key form ``F(a)`` and leave the denominator::

    F(a) = the topk candidates c with the largest  k_a . n_c     (no gradient)
    l_a  = -log( exp(q_a . k_a / t) / (exp(q_a . k_a / t) + sum_{c not in F(a)} exp(q_a . n_c / t)) )

``topk = 0`` keeps every negative. The key, not the query, ranks the candidates: it is the
anchor's other view (NT-Xent) or its momentum-encoder embedding (queue InfoNCE), so the
ranking does not depend on the query being trained.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def false_negatives(key_sim: torch.Tensor, topk: int, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """``[A, K]`` bool: per row, the ``topk`` largest ``key_sim [A, K]`` among ``candidates [A, K]`` (all if None)."""
    out = torch.zeros(key_sim.shape, dtype=torch.bool, device=key_sim.device)
    if topk <= 0 or key_sim.shape[1] == 0:
        return out
    sim = key_sim.float()
    if candidates is not None:
        sim = sim.masked_fill(~candidates, float("-inf"))
    idx = sim.topk(min(topk, sim.shape[1]), dim=1).indices  # [A, k]
    out.scatter_(1, idx, True)
    return out if candidates is None else out & candidates  # rows with fewer than topk candidates
