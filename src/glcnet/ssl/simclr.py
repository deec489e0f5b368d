"""SimCLR baseline (Chen et al., ICML 2020) on DeepLabv3+, as compared in the GLCNet paper.

Two views -> ASPP map -> global average pooling ``[B, A]`` -> MLP ``A -> 256 -> d`` ->
NT-Xent (tau ``temperature``, negatives from the global batch).
"""

from __future__ import annotations

import torch

from glcnet.config import MethodConfig
from glcnet.losses import NTXentLoss, embedding_std
from glcnet.models.heads import ProjectionHead
from glcnet.ssl.base import SSLMethod
from glcnet.transforms import Views
from glcnet.utils.dist import Gather, no_gather


class SimCLR(SSLMethod):
    """SimCLR: NT-Xent of the pooled ASPP maps of the two views (module doc)."""

    name = "simclr"
    find_unused_parameters = True  # decoder blocks get no gradient

    def build(self, m: MethodConfig) -> None:
        self.head = ProjectionHead((self.net.aspp_channels, 256, m.proj_dim))
        self.criterion = NTXentLoss(m.temperature)

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        v = self.make_views(images, generator)
        aspp = self.net.features(torch.cat([v.view1, v.view2]))["aspp"]  # [2B, A, s/16, s/16]
        z1, z2 = self.head(aspp.mean(dim=(2, 3))).chunk(2)  # [B, d] each
        loss = self.criterion(z1, z2, gather)
        return {"loss": loss, "loss_contrast": loss, "emb_std": embedding_std(z1)}
