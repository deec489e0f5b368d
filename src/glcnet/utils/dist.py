"""The gather that contrastive losses take, so that negatives come from the global batch.

A loss's ``gather`` maps ``[n, ...]`` on each rank to ``[W * n, ...]`` in rank order, and
the gradient of every rank's loss flows back to the rank that owns each slice: rank ``r``
receives ``sum_k dL_k / dx_r``, so with DDP averaging parameter gradients over ``W`` ranks
this is exactly the gradient of ``mean_k L_k`` (SimCLR's global NT-Xent). In training it
is Lightning's ``all_gather(x, sync_grads=True)`` (:class:`glcnet.ssl.pretrain.PretrainTask`);
on one process it is :func:`no_gather`. All ranks pass tensors of the same shape, which
holds for every gather of the losses: batches have a fixed size, and GLCNet's local loss
gathers all ``B x P`` patches with their ``valid`` mask rather than a variable count of
valid ones, so no hand-written gather of uneven sizes is needed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

Gather = Callable[[torch.Tensor], torch.Tensor]  # [n, ...] -> [W * n, ...]


def no_gather(x: torch.Tensor) -> torch.Tensor:
    """Single process: the global batch is the local batch."""
    return x


def rank() -> int:
    """This process's rank in the default process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
