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

ASPP rates. A 3x3 branch of dilation ``r`` (padding ``r``) on an ``n x n`` map reads, at
output ``i``, the inputs ``i - r``, ``i`` and ``i + r``: its off-centre taps fall inside the
map for some ``i`` iff ``r <= n - 1``. With ``r >= n`` every off-centre tap reads padding, the
branch is a 1x1 convolution and its 8 other taps get exactly zero gradient; they switch on,
untrained, at a larger input. ``n = side / output_stride``: 64 px views give 4x4 maps, so
DeepLabv3+'s (6, 12, 18) would leave every dilated branch untrained there
(:func:`check_atrous_rates` warns about it, once, and says which rates fit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import segmentation_models_pytorch as smp
import torch
from torch import nn

from glcnet.config import ModelConfig, from_dict
from glcnet.errors import GlcnetError
from glcnet.utils.progress import log

# parts of the network by state-dict prefix (for --load encoder | encoder+aspp | all)
PARTS: dict[str, tuple[str, ...]] = {
    "encoder": ("encoder.",),
    "encoder+aspp": ("encoder.", "decoder.aspp."),
    "all": ("encoder.", "decoder."),
}


# DeepLabv3+'s rates per output stride (Chen et al. 2018; the reference's deeplab_utils/encoder.py)
DEFAULT_ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
# what every checkpoint written before model.atrous_rates existed was built with: smp's default
LEGACY_ATROUS_RATES = (12, 24, 36)


def atrous_rates(cfg: ModelConfig) -> tuple[int, int, int]:
    """``cfg.atrous_rates``, or DeepLabv3+'s for ``cfg.output_stride`` when it is null."""
    if cfg.atrous_rates is not None:
        rates = tuple(int(r) for r in cfg.atrous_rates)
        if len(rates) != 3 or min(rates) < 1:
            raise GlcnetError(f"model.atrous_rates: expected three rates >= 1, got {list(cfg.atrous_rates)}")
        return rates[0], rates[1], rates[2]
    if cfg.output_stride not in DEFAULT_ATROUS_RATES:
        raise GlcnetError(f"model.output_stride: expected 8 or 16, got {cfg.output_stride}")
    return DEFAULT_ATROUS_RATES[cfg.output_stride]


def resolved(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with its rates made explicit (what checkpoints record)."""
    return dataclasses.replace(cfg, atrous_rates=atrous_rates(cfg))


def checkpoint_model_config(saved: Mapping[str, Any], where: str) -> ModelConfig:
    """The :class:`ModelConfig` a checkpoint records; one without rates was built with smp's
    default (:data:`LEGACY_ATROUS_RATES`), whatever today's default is."""
    data = dict(saved)
    data.setdefault("atrous_rates", list(LEGACY_ATROUS_RATES))
    return resolved(from_dict(ModelConfig, data, where))


class DeadTaps(NamedTuple):
    """The taps of one convolution that only ever read padding (:func:`untrained_convs`)."""

    dilation: int
    side: int  # of its input map
    taps: frozenset[tuple[int, int]]  # (row, col) kernel positions


def untrained_convs(cfg: ModelConfig, side: int, in_channels: int = 3) -> dict[str, DeadTaps]:
    """The convolutions wider than 1x1 some of whose taps only ever read padding at ``side`` px inputs,
    so that they get exactly zero gradient: along an axis, tap ``j`` of a convolution (kernel ``k``,
    stride ``s``, padding ``p``, dilation ``d``) on an ``n``-wide input reads ``i s - p + j d`` for the
    outputs ``i``; it is dead when that is outside ``0..n-1`` for every ``i`` (for a stride-1 ASPP
    branch: every off-centre tap once ``d >= n``, module doc), and a kernel position is dead when its
    row or its column tap is. Map sides come from a forward pass on the meta device (shapes only, no
    arithmetic: milliseconds)."""
    with torch.device("meta"):
        net = build_model(cfg, in_channels)
    seen: dict[str, int] = {}
    convs = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].shape[-1]))
             for name, m in convs.items()]
    net.eval()
    net.features(torch.empty(1, net.in_channels, side, side, device="meta"))
    for h in hooks:
        h.remove()
    out = {}
    for name, m in convs.items():
        pad = m.padding if isinstance(m.padding, tuple) else (0, 0)
        n, k, s, p, d = seen[name], m.kernel_size[0], m.stride[0], int(pad[0]), m.dilation[0]
        outputs = (n + 2 * p - d * (k - 1) - 1) // s + 1
        live = [any(0 <= i * s - p + j * d < n for i in range(outputs)) for j in range(k)]
        dead = frozenset((a, b) for a in range(k) for b in range(k) if not (live[a] and live[b]))
        if dead:
            out[name] = DeadTaps(d, n, dead)
    return out


def aspp_branch_rates(cfg: ModelConfig, dead: Mapping[str, DeadTaps]) -> list[int]:
    """The rates among ``dead`` (:func:`untrained_convs`) that are ASPP branches."""
    rates = atrous_rates(cfg)
    return sorted({t.dilation for name, t in dead.items()
                   if name.startswith("decoder.aspp.0.convs.") and t.dilation in rates})


_warned: set[tuple[Any, ...]] = set()


def check_atrous_rates(cfg: ModelConfig, side: int, what: str) -> None:
    """Warn once, and explain, when convolutions of the network are 1x1 convolutions at inputs of
    ``side`` px (``what``: the setting, e.g. ``views.size=64``; module doc): ASPP branches whose rate
    exceeds the map, or, at tiny inputs, the encoder's dilated last stage. A warning, not a refusal:
    the authors' own settings have such a branch (rate 18 at 224 px), tests run tiny networks on
    tiny inputs, and earlier runs must stay reproducible; the packaged configs have none."""
    dead = untrained_convs(cfg, side)
    key = (str(cfg), side, what)
    if not dead or key in _warned:
        return
    _warned.add(key)
    n = -(-side // cfg.output_stride)
    bad = aspp_branch_rates(cfg, dead)
    other = sorted(name for name in dead if not name.startswith("decoder.aspp.0.convs."))
    if other:
        d, m = dead[other[0]].dilation, dead[other[0]].side
        log.warning(f"warning: {what}: {side} px inputs are small for output stride {cfg.output_stride}: "
                    f"{other[0]} (dilation {d}) sees a {m}x{m} map, so only its centre tap trains")
    if bad:
        fit = f"rates below {n}, e.g. model.atrous_rates=[{max(1, n // 4)},{max(1, n // 2)},{max(1, n - 1)}]"
        which = f"rate-{'/'.join(map(str, bad))} branch" + ("es see only their" if len(bad) > 1 else " sees only its")
        log.warning(f"warning: model.atrous_rates {list(atrous_rates(cfg))}: at {what} the ASPP map is {n}x{n} "
                    f"(side / output stride {cfg.output_stride}), so the {which} centre tap: a 1x1 convolution "
                    f"whose 8 other taps never train and switch on, untrained, at larger inputs (all rates "
                    f"train with {fit})")


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
        rates: Sequence[int] = DEFAULT_ATROUS_RATES[16],
    ):
        super().__init__()
        try:
            base = smp.DeepLabV3Plus(
                encoder_name=encoder,
                encoder_weights=None,
                encoder_output_stride=output_stride,
                decoder_channels=aspp_channels,
                decoder_atrous_rates=tuple(rates),
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
        self.rates = tuple(rates)
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
        rates=atrous_rates(cfg),
    )

