"""DeepLabv3+ (segmentation-models-pytorch) that exposes the features GLCNet needs.

``forward(x)`` returns a dict::

    aspp    [B, A, H/16, W/16]  ASPP output (A = aspp_channels = 256): global style contrast
    decoder [B, A, H/4,  W/4 ]  fused decoder features: local matching contrast
    logits  [B, K, H, W]        class scores (only when num_classes > 0)

Input ``x`` is ``[B, C, H, W]`` scaled to [0, 1] per band (see ``glcnet.data``); the
network normalises it with its ``mean``/``std`` buffers, which are saved in every
checkpoint so prediction on raw rasters needs no outside statistics.
H and W must be multiples of 16.

State-dict keys: ``encoder.*`` (backbone), ``decoder.aspp.*`` (ASPP),
``decoder.block1.*``/``decoder.block2.*`` (decoder), ``head.*`` (classifier),
``mean``/``std``. Fine-tuning loads by these prefixes (``PARTS``).
"""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
from torch import nn

from glcnet.config import ModelConfig
from glcnet.errors import GlcnetError

# parts of the network by state-dict prefix (for --load encoder | encoder+aspp | all)
PARTS: dict[str, tuple[str, ...]] = {
    "encoder": ("encoder.",),
    "encoder+aspp": ("encoder.", "decoder.aspp."),
    "all": ("encoder.", "decoder."),
}


class DeepLab(nn.Module):
    """DeepLabv3+ from scratch (``encoder_weights=None``), any band count, OS 8 or 16."""

    mean: torch.Tensor  # [1, C, 1, 1] buffers: normalisation of the scaled input
    std: torch.Tensor

    def __init__(
        self,
        encoder: str = "resnet18",
        in_channels: int = 3,
        num_classes: int = 0,
        output_stride: int = 16,
        aspp_channels: int = 256,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        try:
            base = smp.DeepLabV3Plus(
                encoder_name=encoder,
                encoder_weights=None,
                encoder_output_stride=output_stride,
                decoder_channels=aspp_channels,
                in_channels=in_channels,
                classes=max(num_classes, 1),
            )
        except (KeyError, ValueError) as e:
            raise GlcnetError(f"model: cannot build DeepLabv3+ with encoder {encoder!r}: {e}") from None
        self.encoder = base.encoder
        self.decoder = base.decoder
        self.head = base.segmentation_head if num_classes > 0 else None
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.aspp_channels = aspp_channels
        self.decoder_channels = aspp_channels
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.5] * in_channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std if std is not None else [0.25] * in_channels).view(1, -1, 1, 1))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """ASPP and decoder features of ``x`` ([B, C, H, W] in [0, 1])."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise GlcnetError(f"model expects [B, {self.in_channels}, H, W] input, got {list(x.shape)}")
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise GlcnetError(f"model input height/width must be multiples of 16, got {list(x.shape[-2:])}")
        x = (x - self.mean) / self.std
        feats = self.encoder(x)
        dec = self.decoder
        aspp = dec.aspp(feats[-1])  # [B, A, H/16, W/16]
        high = dec.block1(feats[2])  # [B, 48, H/4, W/4]
        fused = dec.block2(torch.cat([dec.up(aspp), high], dim=1))  # [B, A, H/4, W/4]
        return {"aspp": aspp, "decoder": fused}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.features(x)
        if self.head is not None:
            out["logits"] = self.head(out["decoder"])  # [B, K, H, W] (head upsamples x4)
        return out

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``[B, K, H, W]``."""
        return self.forward(x)["logits"]


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int = 0,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> DeepLab:
    """Build :class:`DeepLab` from a :class:`ModelConfig` (``cfg.in_channels`` 0 = ``in_channels``)."""
    return DeepLab(
        encoder=cfg.encoder,
        in_channels=cfg.in_channels or in_channels,
        num_classes=num_classes,
        output_stride=cfg.output_stride,
        aspp_channels=cfg.aspp_channels,
        mean=mean,
        std=std,
    )

