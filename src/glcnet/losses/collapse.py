"""Collapse monitor (lightly's ``std_of_l2_normalized``), logged as ``emb_std``.

For embeddings ``z [N, d]``: ``u = z / ||z||``, ``emb_std = 1/d sum_j std_i(u_ij)``.
A collapsed representation (all ``u_i`` equal) gives 0; embeddings spread uniformly on the
sphere give about ``1/sqrt(d)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std over the batch of L2-normalised ``z [N, d]``."""
    if z.shape[0] < 2:
        return z.new_zeros(())
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()
