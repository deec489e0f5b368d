"""Inpainting / context-encoder baseline (Pathak et al., CVPR 2016) on DeepLabv3+.

View 1 of the batch (random resized crop, ``views.size``) is cut into a grid of
``mask_block`` squares; ``round(mask_ratio * cells)`` random cells per image are set to 0
in all bands. A ``ReconstructionHead`` on the decoder map predicts the normalised image
``(x - mean) / std`` and ``MaskedMSELoss`` scores the masked pixels only. Blocks lie on the
``mask_block`` grid (exact masked fraction, no overlaps); ``emb_std`` is computed on the
global average of the ASPP map.
"""

from __future__ import annotations

import torch

from glcnet.config import MethodConfig
from glcnet.errors import GlcnetError
from glcnet.losses import MaskedMSELoss, embedding_std
from glcnet.models.heads import ReconstructionHead
from glcnet.ssl.base import SSLMethod
from glcnet.transforms import Views
from glcnet.utils.dist import Gather, no_gather


def block_mask(batch: int, size: int, block: int, ratio: float, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, 1, size, size]`` bool: ``round(ratio * n^2)`` random cells of the ``n x n`` block grid
    (cell order drawn on the CPU with ``generator``, the mask made on ``device``)."""
    n = -(-size // block)  # cells per side (last one cropped)
    k = round(ratio * n * n)
    order = torch.rand(batch, n * n, generator=generator).argsort(dim=1).to(device)  # [B, n*n] random cell order
    cells = order < k  # [B, n*n] k cells per image
    grid = cells.reshape(batch, 1, n, n)
    full = grid.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)  # [B, 1, n*block, n*block]
    return full[..., :size, :size]


class Inpainting(SSLMethod):
    """Context-encoder inpainting of masked blocks of view 1 (module doc)."""

    name = "inpainting"
    find_unused_parameters = False

    def build(self, m: MethodConfig) -> None:
        if not 0.0 < m.mask_ratio < 1.0 or m.mask_block < 1:
            raise GlcnetError(f"inpainting: need 0 < method.mask_ratio < 1 and method.mask_block >= 1, "
                              f"got {m.mask_ratio} and {m.mask_block}")
        self.head = ReconstructionHead(self.net.decoder_channels, self.net.in_channels)
        self.criterion = MaskedMSELoss()

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        m = self.cfg.method
        x = self.make_views(images, generator).view1  # [B, C, s, s]
        mask = block_mask(x.shape[0], x.shape[-1], m.mask_block, m.mask_ratio, x.device, generator)  # [B, 1, s, s]
        feats = self.net.features(x.masked_fill(mask, 0.0))
        pred = self.head(feats["decoder"])  # [B, C, s, s]
        target = (x - self.net.mean) / self.net.std  # [B, C, s, s]
        loss = self.criterion(pred, target, mask)
        return {"loss": loss, "loss_mse": loss, "emb_std": embedding_std(feats["aspp"].mean(dim=(2, 3)))}
