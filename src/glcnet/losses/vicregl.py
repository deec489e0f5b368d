"""VICRegL loss (Bardes, Ponce, LeCun, NeurIPS 2022): global + local variance-invariance-covariance.

For ``x [B, ..., d]`` (batch first; ``...`` are match ranks of local features), unbiased
statistics over the batch ``b``::

    s(x, y) = mean (x - y)^2                                           invariance
    v(x)    = mean_{r,j} relu(1 - sqrt(Var_b x[b, r, j] + eps))        variance (hinge at std 1)
    c(x)    = mean_r 1/d sum_{j != k} Cov_b(x[:, r])_{jk}^2            covariance
    l(x, y) = lambda s(x, y) + mu (v(x) + v(y)) / 2 + nu (c(x) + c(y)) / 2

Global: ``L_global = l(g1, g2)`` for the two views' expanded embeddings ``g [B, e]``.
Local: feature maps ``l1, l2 [B, h, w, e]`` and the positions of their cells ``p1, p2
[B, h, w, 2]`` in one common frame. ``NN(a -> b, k)``: each cell ``i`` of ``a`` is paired
with its nearest cell ``n(i)`` of ``b``, and the ``k`` pairs of smallest distance are kept
(sorted by it), giving ``[B, k, e]`` and ``[B, k, e]``; by location (``|p_a,i - p_b,j|``) or
by feature (``|a_i - b_j|``). With ``matches = (k0, k1)``::

    pair(a, b) = [l(NN_loc(a->b, k0)) + l(NN_loc(b->a, k1))] / 2
               + [l(NN_feat(a->b, k0)) + l(NN_feat(b->a, k1))] / 2
    L_local    = [pair(1, 2) + pair(2, 1)] / 2

The method mixes them as ``alpha L_global + (1 - alpha) L_local``. Defaults are the
paper's: lambda = mu = 25, nu = 1, matches (20, 4), eps 1e-4. These are the numbers of
lightly's ``VICRegLLoss`` (the authors' code; the test checks ours against it), whose
matching (``nearest_neighbors``) is used here. Its covariance term is not: it selects the
off-diagonal entries of ``k`` covariance matrices ``[d, d]`` by boolean indexing, and its
forward + backward took 4.2-5.4 s against 0.6-0.75 s for this module (batch 32, 8 x 8
cells, e = 512, one CPU thread: the 64 px CPU protocol), more than the network. Here
``sum_{j != k} C_jk^2 = |X^T X|_F^2 / (B-1)^2 - sum_j C_jj^2`` with ``|X^T X|_F = |X X^T|_F``
(``X`` the centred batch), a ``[B, B]`` Gram matrix per match rank.
Under DDP ``gather`` all-gathers (with gradient) the batch whose variance and covariance
are taken; the invariance is per rank, so the mean over ranks is the global loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glcnet.errors import GlcnetError
from glcnet.utils.dist import Gather, no_gather


def variance_term(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``v(x)``: mean hinge ``relu(1 - std)`` of every feature over the batch, ``x [B, ..., d]``."""
    return F.relu(1 - torch.sqrt(x.var(dim=0) + eps)).mean()


def covariance_term(x: torch.Tensor) -> torch.Tensor:
    """``c(x)``: mean over match ranks of ``1/d sum_{j != k} Cov_jk^2``, ``x [B, ..., d]``."""
    b, d = x.shape[0], x.shape[-1]
    xc = (x - x.mean(dim=0)).reshape(b, -1, d)  # [B, R, d] centred
    gram = torch.einsum("brc,src->rbs", xc, xc)  # [R, B, B]; |X X^T|_F = |X^T X|_F
    frob = gram.pow(2).sum(dim=(1, 2)) / (b - 1) ** 2  # [R] sum_jk Cov_jk^2
    diag = xc.pow(2).sum(dim=0) / (b - 1)  # [R, d] Cov_jj
    return ((frob - diag.pow(2).sum(dim=-1)) / d).mean()


class VICRegLLoss(nn.Module):
    """``(L_global, L_local)`` of VICRegL for two views (see module doc)."""

    def __init__(self, weights: Sequence[float] = (25.0, 25.0, 1.0), matches: Sequence[int] = (20, 4),
                 eps: float = 1e-4):
        super().__init__()
        if len(weights) != 3 or min(weights) < 0:
            raise GlcnetError(f"method.vicreg_weights must be 3 numbers >= 0, got {list(weights)}")
        if len(matches) != 2 or min(matches) < 1:
            raise GlcnetError(f"method.vicregl_matches must be 2 integers >= 1, got {list(matches)}")
        self.lam, self.mu, self.nu = map(float, weights)
        self.matches = (int(matches[0]), int(matches[1]))
        self.eps = eps

    def vicreg(self, x: torch.Tensor, y: torch.Tensor, gather: Gather) -> torch.Tensor:
        """``l(x, y)`` with the statistics over the gathered batch; ``x, y [B, ..., d]``."""
        xa, ya = gather(x), gather(y)  # [W*B, ..., d]
        return (self.lam * F.mse_loss(x, y)
                + self.mu * (variance_term(xa, self.eps) + variance_term(ya, self.eps)) / 2
                + self.nu * (covariance_term(xa) + covariance_term(ya)) / 2)

    def forward(self, g1: torch.Tensor, g2: torch.Tensor, l1: torch.Tensor, l2: torch.Tensor,
                p1: torch.Tensor, p2: torch.Tensor, gather: Gather = no_gather) -> tuple[torch.Tensor, torch.Tensor]:
        """``g [B, e]``, ``l [B, h, w, e]``, ``p [B, h, w, 2]`` per view -> ``(L_global, L_local)`` scalars."""
        with torch.autocast(g1.device.type, enabled=False):  # statistics in float32 (at least) under AMP
            g1, g2, l1, l2, p1, p2 = (x.to(torch.promote_types(x.dtype, torch.float32))
                                      for x in (g1, g2, l1, l2, p1, p2))
            glob = self.vicreg(g1, g2, gather)
            feats = [x.flatten(1, 2) for x in (l1, l2)]  # [B, h*w, e]
            pos = [x.flatten(1, 2) for x in (p1, p2)]  # [B, h*w, 2]
            local = (self.pair(feats[0], feats[1], pos[0], pos[1], gather)
                     + self.pair(feats[1], feats[0], pos[1], pos[0], gather)) / 2
        return glob, local

    def pair(self, a: torch.Tensor, b: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor,
             gather: Gather) -> torch.Tensor:
        """``pair(a, b)`` of the module doc: location- and feature-matched cells, both directions."""
        from lightly.models.utils import nearest_neighbors  # lightly imports torchvision: seconds at import

        k0, k1 = self.matches
        total = a.new_zeros(())
        for dist_ab in (torch.cdist(pa, pb), torch.cdist(a, b).detach()):  # location, feature: [B, n_a, n_b]
            x0, y0 = nearest_neighbors(a, b, dist_ab, k0)  # [B, k0, e] each
            x1, y1 = nearest_neighbors(b, a, dist_ab.transpose(1, 2), k1)  # [B, k1, e] each
            total = total + (self.vicreg(x0, y0, gather) + self.vicreg(x1, y1, gather)) / 2
        return total
