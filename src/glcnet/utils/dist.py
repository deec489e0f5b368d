"""All-gather over DDP ranks, so contrastive negatives come from the global batch.

``gather_with_grad(x)``: ``cat([x_0, ..., x_{W-1}], 0)`` in rank order, and the gradient
of every rank's loss flows back to the rank that owns each slice (as in SimCLR's global
NT-Xent): rank ``r`` receives ``sum_k dL_k / dx_r``. With DDP averaging parameter
gradients over ``W`` ranks this is exactly the gradient of ``mean_k L_k``.
Both functions are the identity when ``torch.distributed`` is not initialised or has
one rank. All ranks must pass tensors of the same shape.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

Gather = Callable[[torch.Tensor], torch.Tensor]  # [n, ...] -> [W * n, ...], see gather_with_grad


def no_gather(x: torch.Tensor) -> torch.Tensor:
    """Single process: the global batch is the local batch."""
    return x


def is_distributed() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


class _AllGather(torch.autograd.Function):
    """Forward: ``all_gather``. Backward: sum the gradients of all ranks, keep this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)  # [W * n, ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # own buffer: all_reduce works in place
        dist.all_reduce(grad)  # sum_k dL_k / d(gathered)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]  # [n, ...]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``[n, ...]`` on each rank -> ``[W * n, ...]`` with gradient to every rank's own slice."""
    if not is_distributed():
        return x
    return _AllGather.apply(x.contiguous())


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``[n, ...]`` on each rank -> ``[W * n, ...]``, detached (e.g. MoCo keys to enqueue)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)
