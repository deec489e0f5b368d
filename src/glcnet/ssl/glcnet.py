"""GLCNet (Li et al., IEEE TGRS 2022): global style contrast + local matching contrast.

Per batch of tiles: two views (``glcnet.transforms``), one DeepLabv3+ pass over both.

- global: ``style_vector`` of the ASPP map (mean+variance, ``[B, 2A]``; mean only for the
  "no style" ablation) -> MLP ``2A -> 256 -> d`` -> NT-Xent (tau ``temperature``) between views.
- local: ``patch_num`` matched boxes per image (``sample_patches``) -> RoI-pooled decoder
  features (1/4 resolution, ``spatial_scale=0.25``) -> MLP ``D -> 64 -> d`` -> NT-Xent over
  all valid ``B x patch_num`` patches; with ``fn_topk`` > 0 the ``fn_topk`` patches most similar
  to the anchor's positive are not negatives (``glcnet_fn``; :mod:`glcnet.losses.false_negatives`).
- ``loss = lam * loss_global + (1 - lam) * loss_local``; a term with weight 0 is neither
  built nor computed (ablations "no global": lam 0, "no local": lam 1).
"""

from __future__ import annotations

import torch
from torch import nn

from glcnet.config import MethodConfig
from glcnet.errors import GlcnetError
from glcnet.losses import LocalMatchingLoss, NTXentLoss, embedding_std, pool_patches, style_vector
from glcnet.models.heads import ProjectionHead
from glcnet.ssl.base import SSLMethod
from glcnet.ssl.patches import sample_patches
from glcnet.transforms import Views
from glcnet.utils.dist import Gather, no_gather


class GLCNet(SSLMethod):
    """GLCNet: global style contrast + local matching contrast (module doc)."""

    name = "glcnet"
    find_unused_parameters = False  # set per instance below

    def build(self, m: MethodConfig) -> None:
        views = self.cfg.views
        if not 0.0 <= m.lam <= 1.0:
            raise GlcnetError(f"method.lam must be in [0, 1], got {m.lam}")
        if m.lam < 1 and not 0 < m.patch_size <= views.size:
            raise GlcnetError(f"method.patch_size must be in (0, views.size={views.size}], got {m.patch_size}")
        if m.lam < 1 and m.patch_num < 1:
            raise GlcnetError(f"method.patch_num must be >= 1, got {m.patch_num}")
        a, d = self.net.aspp_channels, self.net.decoder_channels
        self.global_head = ProjectionHead(((2 if m.style else 1) * a, 256, m.proj_dim)) if m.lam > 0 else None
        self.local_head = ProjectionHead((d, 64, m.proj_dim)) if m.lam < 1 else None
        self.global_loss: nn.Module = NTXentLoss(m.temperature)  # GLCNet-M: InfoNCE against a queue
        self.local_loss: nn.Module = LocalMatchingLoss(m.temperature, m.fn_topk)
        # lam == 1 leaves the decoder blocks without gradient (DDP needs find_unused_parameters)
        self.find_unused_parameters = m.lam == 1

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        m = self.cfg.method
        v = self.make_views(images, generator)
        feats = self.net.features(torch.cat([v.view1, v.view2]))  # both views in one pass
        out: dict[str, torch.Tensor] = {}
        loss = v.view1.new_zeros(())
        if self.global_head is not None:
            g = self.global_head(style_vector(feats["aspp"], m.style))  # [2B, d]
            g1, g2 = g.chunk(2)  # [B, d] each
            out["loss_global"] = self.global_loss(g1, g2, gather)
            loss = loss + m.lam * out["loss_global"]
            out["emb_std"] = embedding_std(g1)
        if self.local_head is not None:
            boxes1, boxes2, valid = sample_patches(v, m.patch_num, m.patch_size, generator)  # [B, P, 4] x2, [B, P]
            dec1, dec2 = feats["decoder"].chunk(2)  # [B, D, s/4, s/4] each
            z1 = self.local_head(pool_patches(dec1, boxes1, 0.25))  # [B, P, d]
            z2 = self.local_head(pool_patches(dec2, boxes2, 0.25))  # [B, P, d]
            out["loss_local"] = self.local_loss(z1, z2, valid, gather)
            loss = loss + (1 - m.lam) * out["loss_local"]
            out.setdefault("emb_std", embedding_std(z1[valid]))
        out["loss"] = loss
        return out
