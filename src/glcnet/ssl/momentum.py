"""Momentum encoders, shuffle-BN and key queues: the MoCo machinery (He et al. 2020; Chen et al. 2020).

Shared by ``mocov2`` and ``glcnet_m``; built on lightly's memory bank, ``update_momentum``
and ``batch_shuffle``/``batch_unshuffle``.

- Momentum encoder: a frozen copy (``momentum_copy``) updated after each optimizer step by
  ``theta_k <- m theta_k + (1 - m) theta_q`` (lightly's ``update_momentum``, parameters
  only: the key encoder's BatchNorm statistics are its own, as in MoCo).
- :class:`KeyQueue`: lightly's memory bank, a ring buffer ``[K, d]`` of past keys (random
  unit vectors at first). The loss reads it, then the step's keys, gathered from every
  rank, replace the oldest rows (a push that passes the end stops there and the pointer
  restarts at 0, lightly's rule). Unlike lightly's, its buffers are in ``state_dict``, so
  checkpoints carry queue and pointer for ``--resume``.
- Shuffle-BN: the key encoder sees the batch in a random order, so that a query and its
  key are normalised with the statistics of different samples, and the queries cannot
  find their keys through the batch statistics. Under DDP this is MoCo's own: lightly's
  ``batch_shuffle(distributed=True)`` spreads the global batch over the ranks at random
  (tensors that belong to the samples, e.g. GLCNet-M's patch boxes, travel with them).
  In one process a shuffle alone changes nothing (BatchNorm over the whole batch does not
  depend on the order), so the single-process equivalent of the MoCo CIFAR-10 demo is
  used: every BatchNorm2d of both encoders becomes a :class:`SplitBatchNorm` whose
  training statistics are per sub-batch (``method.bn_splits`` of them, sample ``i`` in
  sub-batch ``i mod S``), i.e. ``S`` simulated devices; the shuffle then puts a key in
  another sub-batch than its query (with probability ``1 - 1/S``).
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
import torch.nn.functional as F
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import batch_shuffle, batch_unshuffle, concat_all_gather
from lightly.utils import dist
from torch import nn

from glcnet.config import MethodConfig, PretrainConfig
from glcnet.errors import GlcnetError


def distributed() -> bool:
    """True in a process group of more than one rank (lightly's ``dist`` helpers)."""
    return dist.world_size() > 1

M = TypeVar("M", bound=nn.Module)


def check_momentum_options(cfg: PretrainConfig, *queues: str) -> None:
    """Validate ``momentum``, ``bn_splits`` (against ``trainer.batch_size``) and the named queue sizes."""
    m, name = cfg.method, cfg.method.name
    if not 0.0 <= m.momentum <= 1.0:
        raise GlcnetError(f"{name}: method.momentum must be in [0, 1], got {m.momentum}")
    for q in queues:
        if getattr(m, q) < 1:
            raise GlcnetError(f"{name}: method.{q} must be >= 1, got {getattr(m, q)}")
    bs, s = cfg.trainer.batch_size, m.bn_splits
    if s < 1 or (s > 1 and (bs % s or bs // s < 2)):
        raise GlcnetError(f"{name}: method.bn_splits={s} must be >= 1 and split trainer.batch_size={bs} into "
                          f"sub-batches of >= 2 samples (or set method.bn_splits=1: plain BatchNorm)")


def momentum_copy(module: M) -> M:
    """A frozen deep copy of ``module`` (the key encoder's part)."""
    return copy.deepcopy(module).requires_grad_(False)


class KeyQueue(MemoryBankModule):
    """Ring buffer of the last ``size`` keys ``[size, dim]`` (lightly's memory bank, kept in checkpoints)."""

    def __init__(self, size: int, dim: int):
        super().__init__((size, dim), gather_distributed=False, feature_dim_first=False)
        for name in ("bank", "bank_ptr"):  # lightly registers them non-persistent; --resume needs them
            self.register_buffer(name, getattr(self, name), persistent=True)

    def read_and_push(self, keys: torch.Tensor, push: bool) -> torch.Tensor:
        """The queue ``[size, dim]`` as it is now; then, if ``push``, ``keys [n, dim]`` replace the oldest rows."""
        _, bank = self(keys.detach(), update=push)
        return bank


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with training statistics per sub-batch: sample ``i`` in sub-batch ``i mod splits``.

    The running statistics move by the mean of the sub-batches' statistics; evaluation and
    ``splits = 1`` are plain BatchNorm2d. Same parameters and state dict as BatchNorm2d.
    """

    splits: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.splits
        if s == 1 or not self.training or not self.track_running_stats:
            return super().forward(x)
        assert self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None
        n, c, h, w = x.shape
        if n % s or n // s < 2:
            raise GlcnetError(f"shuffle-BN: a batch of {n} does not split into method.bn_splits={s} sub-batches "
                              "of >= 2 samples (set method.bn_splits=1: plain BatchNorm)")
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)  # [S*C] updated in place below
        weight = None if self.weight is None else self.weight.repeat(s)
        bias = None if self.bias is None else self.bias.repeat(s)
        # [n, C, h, w] -> [n/S, S*C, h, w]: channel block j holds the samples i = j mod S
        y = F.batch_norm(x.reshape(n // s, s * c, h, w), mean, var, weight, bias, True, momentum, self.eps)
        self.running_mean.copy_(mean.view(s, c).mean(dim=0))
        self.running_var.copy_(var.view(s, c).mean(dim=0))
        return y.reshape(n, c, h, w)


def split_batch_norm(module: nn.Module) -> nn.Module:
    """Replace (in place) every BatchNorm2d of ``module`` by a :class:`SplitBatchNorm` with its state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = SplitBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            split_batch_norm(child)
    return module


def set_bn_splits(module: nn.Module, m: MethodConfig) -> None:
    """Sub-batches of every :class:`SplitBatchNorm`: ``m.bn_splits`` in one process, 1 under DDP (real shuffle)."""
    splits = 1 if distributed() else m.bn_splits
    for mod in module.modules():
        if isinstance(mod, SplitBatchNorm):
            mod.splits = splits


@torch.no_grad()
def shuffle(x: torch.Tensor, *extra: torch.Tensor,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """``x [B, ...]`` in a random batch order (over all ranks under DDP), ``extra`` tensors of the same
    samples in the same order, and the index that :func:`unshuffle` needs."""
    if distributed():
        xs, idx = batch_shuffle(x, distributed=True)  # idx: global unshuffle index, same on every rank
        rows = idx.argsort().view(dist.world_size(), -1)[dist.rank()]  # global rows now on this rank
        return xs, [concat_all_gather(e)[rows] for e in extra], idx
    idx = torch.randperm(x.shape[0], generator=generator).to(x.device)  # drawn on the CPU (views' rule)
    return x[idx], [e[idx] for e in extra], idx


@torch.no_grad()
def unshuffle(y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-sample outputs ``y`` of shuffled inputs, back in this rank's original order."""
    return batch_unshuffle(y, idx, distributed=distributed())
