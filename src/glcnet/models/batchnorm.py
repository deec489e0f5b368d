"""BatchNorm statistics recomputed on given tiles: the same normalisation regime for every initialisation.

A frozen network in eval mode normalises with its running statistics: a pretrained one with
those of augmented pretraining views (smaller, blurred, recoloured), a random one with
(0, 1), i.e. none at all. Comparing their frozen features then compares these statistics as
much as what the weights learned. :func:`recalibrate` makes the regime the same: it resets
every BatchNorm's running mean and variance and recomputes them as the average over
``n`` forward passes in train mode of the per-batch statistics (``momentum=None``: torch's
cumulative average, ``mu = 1/n sum_b mu_b``, ``var = 1/n sum_b var_b`` with the unbiased
batch variance), without gradients and without touching any weight, then leaves the network
in eval mode. Used before every probe (:mod:`glcnet.finetune.probe`) and every frozen
fine-tuning, with the same tiles and number of passes whatever the initialisation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import torch
from torch import nn


def batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``net`` that track running statistics."""
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate(net: nn.Module, batches: Iterable[torch.Tensor], forward: str = "features") -> int:
    """Recompute the running statistics of every BatchNorm of ``net`` on ``batches`` ``[B, C, h, w]``
    (module doc); returns the number of passes. ``forward``: the method of ``net`` to call."""
    norms = batch_norms(net)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    net.eval()
    for m in norms:
        m.train()
    n = 0
    try:
        device = next(net.parameters()).device
        for x in batches:
            getattr(net, forward)(x.to(device))
            n += 1
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        net.eval()
    return n


def chunks(tiles: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``tiles [N, C, h, w]`` in batches of ``batch_size`` (>= 2 each: a trailing single tile joins the
    batch before it, since BatchNorm after global pooling needs two samples in train mode)."""
    n, b = tiles.shape[0], max(2, batch_size)
    starts = list(range(0, n, b))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    return [tiles[s:e] for s, e in zip(starts, [*starts[1:], n])]


M = TypeVar("M", bound=nn.Module)


def recalibrated(net: M, tiles: torch.Tensor, batch_size: int = 16) -> M:
    """A copy of ``net`` (the original is untouched) with its statistics recomputed on ``tiles``, in eval mode."""
    import copy

    clone = copy.deepcopy(net)
    recalibrate(clone, chunks(tiles, batch_size))
    return clone
