"""VICRegL (Bardes, Ponce, LeCun, NeurIPS 2022) on DeepLabv3+: no negatives, no momentum encoder.

Both views in one pass; loss of :mod:`glcnet.losses.vicregl`, ``alpha = vicregl_alpha``::

    loss = alpha * L_global + (1 - alpha) * L_local

- global: ASPP map -> global average pooling ``[B, A]`` -> expander MLP ``A -> E -> E``
  (BatchNorm + ReLU between, ``E = expander_dim``) -> ``g [B, E]``.
- local: decoder map (1/4 resolution) average-pooled into cells of ``vicregl_cell`` view
  pixels -> ``[B, s/cell, s/cell, D]`` -> expander ``D -> E -> E`` on every cell.
- positions of the cells, for the location-based matches: our analytic correspondence in
  place of the paper's crop-box grids. The centre of view-2 cell ``(i, j)`` is the view-2
  point ``((j + 1/2) cell, (i + 1/2) cell)``; view-1 cell centres are mapped into view 2
  with :func:`~glcnet.transforms.map_points` (crops, flips and rotations included), so
  both grids live in view-2 pixels and the location-nearest cell is the same ground.
  Feature-based matches use the embeddings as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glcnet.config import MethodConfig
from glcnet.errors import GlcnetError
from glcnet.losses import VICRegLLoss, embedding_std
from glcnet.models.heads import ProjectionHead
from glcnet.ssl.base import SSLMethod
from glcnet.transforms import Views, map_points
from glcnet.utils.dist import Gather, no_gather


def cell_centres(views: Views, cell: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of the ``cell``-pixel cells of view 1 and view 2, both in view-2 coords: ``[B, n, n, 2]`` each."""
    b, n = views.view1.shape[0], views.size // cell
    c = (torch.arange(n, device=views.box1.device, dtype=torch.float32) + 0.5) * cell  # [n]
    y, x = torch.meshgrid(c, c, indexing="ij")
    grid = torch.stack([x, y], dim=-1).reshape(1, n * n, 2).expand(b, -1, -1)  # [B, n*n, 2] (x, y)
    return map_points(views, grid).reshape(b, n, n, 2), grid.reshape(b, n, n, 2)


class VICRegL(SSLMethod):
    """VICRegL on DeepLabv3+: global and local variance-invariance-covariance terms (module doc)."""

    name = "vicregl"
    find_unused_parameters = False

    def build(self, m: MethodConfig) -> None:
        size = self.cfg.views.size
        if not 0.0 <= m.vicregl_alpha <= 1.0:
            raise GlcnetError(f"method.vicregl_alpha must be in [0, 1], got {m.vicregl_alpha}")
        if m.vicregl_cell < 4 or m.vicregl_cell % 4 or size % m.vicregl_cell:
            raise GlcnetError(f"method.vicregl_cell must be a multiple of 4 that divides views.size={size}, "
                              f"got {m.vicregl_cell}")
        if m.expander_dim < 2:
            raise GlcnetError(f"method.expander_dim must be >= 2, got {m.expander_dim}")
        e = m.expander_dim
        self.global_head = ProjectionHead((self.net.aspp_channels, e, e), bn=True)
        self.local_head = ProjectionHead((self.net.decoder_channels, e, e), bn=True)
        self.criterion = VICRegLLoss(m.vicreg_weights, m.vicregl_matches)

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        m = self.cfg.method
        v = self.make_views(images, generator)
        feats = self.net.features(torch.cat([v.view1, v.view2]))  # both views in one pass
        g1, g2 = self.global_head(feats["aspp"].mean(dim=(2, 3))).chunk(2)  # [B, E] each
        cells = F.avg_pool2d(feats["decoder"], m.vicregl_cell // 4)  # [2B, D, s/cell, s/cell]
        l1, l2 = self.local_head(cells.permute(0, 2, 3, 1)).chunk(2)  # [B, n, n, E] each
        p1, p2 = cell_centres(v, m.vicregl_cell)  # [B, n, n, 2] each, view-2 pixels
        glob, local = self.criterion(g1, g2, l1, l2, p1, p2, gather)
        loss = m.vicregl_alpha * glob + (1 - m.vicregl_alpha) * local
        return {"loss": loss, "loss_global": glob, "loss_local": local, "emb_std": embedding_std(g1)}
