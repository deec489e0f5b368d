"""SimCLR baseline (Chen et al., ICML 2020) on DeepLabv3+, as compared in the GLCNet paper.

Two views -> ASPP map -> global average pooling ``[B, A]`` -> MLP ``A -> 256 -> d`` ->
NT-Xent (tau ``temperature``, negatives from the global batch).
"""

from __future__ import annotations

from typing import Sequence

import torch

from glcnet.config import PretrainConfig
from glcnet.losses import NTXentLoss, embedding_std
from glcnet.models.heads import ProjectionHead
from glcnet.ssl.base import Gather, SSLMethod, no_gather
from glcnet.transforms import ViewGenerator, Views


class SimCLR(SSLMethod):
    name = "simclr"
    find_unused_parameters = True  # decoder blocks get no gradient

    def __init__(self, cfg: PretrainConfig, in_channels: int,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__(cfg, in_channels, mean, std)
        self.views = ViewGenerator(cfg.views)
        self.head = ProjectionHead((self.net.aspp_channels, 256, cfg.method.proj_dim))
        self.criterion = NTXentLoss(cfg.method.temperature)

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather) -> dict[str, torch.Tensor]:
        v = images if isinstance(images, Views) else self.views(images)  # views made in DataLoader workers or here
        aspp = self.net.features(torch.cat([v.view1, v.view2]))["aspp"]  # [2B, A, s/16, s/16]
        z1, z2 = self.head(aspp.mean(dim=(2, 3))).chunk(2)  # [B, d] each
        loss = self.criterion(z1, z2, gather)
        return {"loss": loss, "loss_contrast": loss, "emb_std": embedding_std(z1)}
