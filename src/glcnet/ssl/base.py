"""Base class of every pretraining method (one module per method in ``glcnet.ssl``)."""

from __future__ import annotations

from typing import Callable, ClassVar, Sequence

import torch
from torch import nn

from glcnet.config import PretrainConfig
from glcnet.models import build_model

Gather = Callable[[torch.Tensor], torch.Tensor]


def no_gather(x: torch.Tensor) -> torch.Tensor:
    """Single process: the global batch is the local batch."""
    return x


class SSLMethod(nn.Module):
    """A self-supervised method around one DeepLabv3+ network ``self.net``.

    ``forward(images, gather)`` takes a batch of unlabeled tiles ``[B, C, H, W]`` in [0, 1] (or uint8 = value / 255)
    and returns a dict with the scalar ``loss`` to minimise, each named loss term
    (e.g. ``loss_global``, ``loss_local``) and ``emb_std`` (collapse monitor: mean
    per-dimension std of the L2-normalised embeddings; ~0 means collapse, ~1/sqrt(d) is healthy).
    ``gather`` all-gathers a tensor over DDP ranks *with gradient* (identity on one process),
    so contrastive negatives come from the global batch.
    ``pretrained_state_dict()`` is what fine-tuning loads (keys of :class:`glcnet.models.DeepLab`).
    """

    name: ClassVar[str] = ""

    def __init__(self, cfg: PretrainConfig, in_channels: int,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.cfg = cfg
        self.net = build_model(cfg.model, in_channels, num_classes=0, mean=mean, std=std)

    def forward(self, images: torch.Tensor, gather: Gather = no_gather) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def on_after_step(self) -> None:
        """Called after each optimizer step (e.g. MoCo's momentum update)."""

    def pretrained_state_dict(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()
