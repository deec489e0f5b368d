"""Base class of every pretraining method (one module per method in ``glcnet.ssl``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from glcnet.config import MethodConfig, PretrainConfig
from glcnet.models import build_model
from glcnet.transforms import ViewGenerator, Views
from glcnet.utils.dist import Gather, no_gather


class SSLMethod(nn.Module):
    """A self-supervised method around one DeepLabv3+ network ``self.net``.

    The base builds what every method shares: ``self.cfg``, the network ``self.net`` (no
    classifier) and the view generator ``self.views``; then :meth:`build` checks the
    method's options and adds its heads and losses.

    ``forward(images, gather)`` takes a batch of unlabeled tiles ``[B, C, H, W]`` in [0, 1]
    (or uint8 = value / 255), or :class:`~glcnet.transforms.Views` made by the DataLoader
    workers, and returns a dict with the scalar ``loss`` to minimise, each named loss term
    (e.g. ``loss_global``, ``loss_local``) and ``emb_std`` (collapse monitor: mean
    per-dimension std of the L2-normalised embeddings; ~0 means collapse, ~1/sqrt(d) is healthy).
    ``gather`` all-gathers a tensor over DDP ranks *with gradient* (identity on one process),
    so contrastive negatives come from the global batch.
    ``pretrained_state_dict()`` is what fine-tuning loads (keys of :class:`glcnet.models.DeepLab`).
    ``find_unused_parameters``: some parameters get no gradient (DDP must be told).
    ``per_rank_batchnorm``: its batch norms must not be synchronised over processes (MoCo's
    shuffle-BN; :func:`glcnet.engine.processes.sync_batchnorm`).

    Randomness: EVERY random draw of a method (its views through :meth:`make_views`, patch
    positions, masks, jigsaw offsets and permutations, ...) uses ``forward``'s ``generator``
    and never torch's global RNG. The training task owns it: a CPU ``torch.Generator``
    seeded by ``(seed, global rank)`` (:func:`glcnet.utils.rng.rank_generator`), whose state
    every checkpoint saves per rank, so DDP ranks draw different values and ``--resume``
    continues each rank's stream. Draw small parameter tensors on the CPU with it and move
    them to the images' device, e.g. ``torch.rand(b, k, generator=generator).to(x.device)``:
    the same seed then gives the same draws on CPU and GPU, and no draw waits for the GPU.
    ``None`` (tests, one-off calls) falls back to torch's global CPU RNG.
    """

    name: ClassVar[str] = ""
    find_unused_parameters: bool = False
    per_rank_batchnorm: ClassVar[bool] = False  # shuffle-BN: batch norm stays per process under DDP

    def __init__(self, cfg: PretrainConfig, in_channels: int,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.cfg = cfg
        self.net = build_model(cfg.model, in_channels, num_classes=0, mean=mean, std=std)
        self.views = ViewGenerator(cfg.views)
        self.build(cfg.method)

    def build(self, m: MethodConfig) -> None:
        """Check the method's options ``m`` and build its heads and losses (``self.net`` exists)."""

    def network_input(self) -> tuple[int, str]:
        """Side of the images the network sees in pretraining and the setting that makes it
        (the ASPP rates are checked against it: :func:`glcnet.models.deeplab.check_atrous_rates`)."""
        return self.cfg.views.size, f"views.size={self.cfg.views.size}"

    def make_views(self, images: torch.Tensor | Views, generator: torch.Generator | None = None) -> Views:
        """The batch's views: made by the DataLoader workers (``views.in_loader``) or here, from ``generator``."""
        return images if isinstance(images, Views) else self.views(images, generator)

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Loss terms of one batch (class doc)."""
        raise NotImplementedError

    @torch.no_grad()
    def on_after_step(self) -> None:
        """Called after each optimizer step (e.g. MoCo's momentum update)."""

    def pretrained_state_dict(self) -> dict[str, torch.Tensor]:
        """The network's weights, as ``pretrained.pt`` stores them."""
        return self.net.state_dict()
