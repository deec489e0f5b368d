"""Small heads on top of :class:`glcnet.models.DeepLab` used only during pretraining.

None of them is exported to ``pretrained.pt`` (fine-tuning loads the DeepLab state dict).

- ``ProjectionHead(dims)``: MLP ``d0 -> d1 -> ... -> dn``, ReLU (optional BatchNorm) between
  layers, no activation after the last. GLCNet global head ``2A -> 256 -> 64`` (style:
  mean+variance of the A=256 ASPP channels; ``A -> 256 -> 64`` without style), local head
  ``D -> 64 -> 64`` on RoI-pooled decoder features, SimCLR / MoCo ``A -> 256 -> 64``.
  Deviation from the reference: smp's decoder map is ``D = 256`` channels at 1/4 of the
  view resolution, the reference's is 64 channels at full resolution, so the local head
  input is 256 wide.
- ``ReconstructionHead``: decoder map ``[B, D, H/4, W/4]`` -> image ``[B, C, H, W]``
  (3x3 conv, ReLU, 1x1 conv to the C bands, bilinear x4 upsampling) for inpainting.
- ``JigsawHead``: ``T`` tile vectors ``[B, T, A]`` -> concatenation ``[B, T*A]`` -> MLP ->
  permutation logits ``[B, n_perm]`` (Noroozi & Favaro 2016, with a smaller hidden layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """MLP ``dims[0] -> ... -> dims[-1]`` with ReLU (and BatchNorm if ``bn``) between layers."""

    def __init__(self, dims: Sequence[int] = (512, 256, 64), bn: bool = False):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"ProjectionHead needs at least 2 dims, got {tuple(dims)}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b, bias=not (bn and i < len(dims) - 2)))
            if i < len(dims) - 2:
                if bn:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(*layers)
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., dims[0]]`` -> ``[..., dims[-1]]`` (leading dims flattened for BatchNorm)."""
        lead = x.shape[:-1]
        return self.mlp(x.reshape(-1, x.shape[-1])).reshape(*lead, self.dims[-1])


class ReconstructionHead(nn.Module):
    """Decoder map ``[B, D, h, w]`` -> reconstructed bands ``[B, C, scale*h, scale*w]``."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, scale: int = 4):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # [B, C, h, w]
        return F.interpolate(y, scale_factor=self.scale, mode="bilinear", align_corners=False)  # [B, C, H, W]


class JigsawHead(nn.Module):
    """Tile vectors ``[B, T, A]`` -> permutation logits ``[B, n_perm]``."""

    def __init__(self, tile_dim: int, tiles: int, n_perm: int, hidden: int = 1024):
        super().__init__()
        self.mlp = ProjectionHead((tiles * tile_dim, hidden, n_perm))

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.mlp(tiles.flatten(1))  # [B, T*A] -> [B, n_perm]
