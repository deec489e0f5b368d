"""Optimiser and learning rate: AdamW (or Adam), the per-epoch schedule, the rate scaled to the global batch.

Why AdamW by default (docs/design.md, "Weight decay"): Adam's coupled L2 adds ``wd w`` to the
gradient and then divides by its running RMS, so a weight whose loss gradient is exactly 0
(an ASPP tap that only ever reads padding, a decoder that SimCLR never uses) moves by about
``lr`` per step towards 0, whatever ``wd`` is: after a few hundred steps at 1e-3 it is gone.
AdamW's decoupled decay ``w <- w (1 - lr wd)`` moves it by a factor ``1 - 1e-8`` (lr 1e-3,
wd 1e-5): nothing, in float32. For weights that do get a gradient the two differ little at
the reference's ``wd = 1e-5``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from glcnet.config import OptimConfig
from glcnet.errors import GlcnetError

ParamGroup = dict[str, Any]  # {"params": [Parameter, ...], "lr_mult": float}
OPTIMIZERS: dict[str, type[torch.optim.Adam]] = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def scaled_lr(ocfg: OptimConfig, batch_size: int, world_size: int) -> tuple[float, str]:
    """Learning rate for the global batch ``B = batch_size x world_size`` and a line saying so.

    ``optim.lr`` is the rate for a global batch of ``ref = optim.ref_batch`` (0: ``batch_size``,
    one device). ``optim.scale_lr``: ``linear``: ``lr B / ref`` (Goyal et al. 2017, the SGD
    rule); ``sqrt``: ``lr sqrt(B / ref)`` (default: Adam's update noise stays the same,
    Malladi et al. 2022); ``none``: ``lr``. One process with ``ref_batch`` 0 is never rescaled.
    """
    rule, ref = ocfg.scale_lr, ocfg.ref_batch or batch_size
    if rule not in ("linear", "sqrt", "none"):
        raise GlcnetError(f"optim.scale_lr: expected linear, sqrt or none, got {rule!r}")
    if ref < 0:
        raise GlcnetError(f"optim.ref_batch: expected 0 (= trainer.batch_size) or a batch size, got {ref}")
    glob = batch_size * world_size
    factor = {"linear": glob / ref, "sqrt": math.sqrt(glob / ref), "none": 1.0}[rule]
    lr = ocfg.lr * factor
    how = (f"{batch_size} per process x {world_size} processes" if world_size > 1 else "one process")
    if factor == 1.0:
        msg = f"learning rate {lr:g} (global batch {glob}: {how}; optim.scale_lr={rule}, reference batch {ref})"
    else:
        formula = f"{glob} / {ref}" if rule == "linear" else f"sqrt({glob} / {ref})"
        msg = (f"learning rate {lr:g} = optim.lr {ocfg.lr:g} x {formula} (optim.scale_lr={rule}; "
               f"global batch {glob}: {how}; reference batch {ref})")
    return lr, msg


def lr_factor(epoch: int, ocfg: OptimConfig) -> float:
    """Learning-rate multiplier at ``epoch`` (0-based).

    cosine: ``m + (1 - m) * (1 + cos(pi * t)) / 2`` with ``m = min_lr / lr`` and
    ``t = (epoch - warmup) / (epochs - warmup)``; exp: ``gamma ** epoch``; constant: 1.
    Linear warm-up over ``warmup_epochs`` first.
    """
    if ocfg.warmup_epochs > 0 and epoch < ocfg.warmup_epochs:
        return (epoch + 1) / ocfg.warmup_epochs
    if ocfg.schedule == "cosine":
        span = max(1, ocfg.epochs - ocfg.warmup_epochs)
        t = min(1.0, (epoch - ocfg.warmup_epochs) / span)
        m = ocfg.min_lr / ocfg.lr
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * t))
    if ocfg.schedule == "exp":
        return ocfg.gamma**epoch
    if ocfg.schedule == "constant":
        return 1.0
    raise GlcnetError(f"optim.schedule: unknown schedule {ocfg.schedule!r} (valid: cosine, exp, constant)")


def check_optim(ocfg: OptimConfig) -> None:
    """The optimiser and schedule names: one line before any work, not a failure inside the fit."""
    lr_factor(0, ocfg)
    if ocfg.optimizer not in OPTIMIZERS:
        raise GlcnetError(f"optim.optimizer: expected one of {', '.join(OPTIMIZERS)}, got {ocfg.optimizer!r}")


def configure_optim(params: Iterable[torch.nn.Parameter] | Sequence[ParamGroup], ocfg: OptimConfig,
                    lr: float | None = None) -> OptimizerLRSchedulerConfig:
    """AdamW or Adam (``ocfg.optimizer``; lr, betas, weight_decay) + per-epoch schedule, as Lightning's
    ``configure_optimizers``;
    ``lr`` (default ``ocfg.lr``): the rate for the global batch (:func:`scaled_lr`).

    ``params``: the parameters, or groups ``{"params": [...], "lr_mult": m}`` whose rate is
    ``m lr`` (the schedule multiplies every group's rate alike). Parameters without gradient are left out.
    """
    check_optim(ocfg)
    base = ocfg.lr if lr is None else lr
    items = list(params)
    groups = items if items and isinstance(items[0], dict) else [{"params": items}]
    kept = [{"params": ps, "lr": base * g.get("lr_mult", 1.0)} for g in cast(list[ParamGroup], groups)
            if (ps := [p for p in g["params"] if p.requires_grad])]
    opt = OPTIMIZERS[ocfg.optimizer](kept, lr=base, betas=(ocfg.betas[0], ocfg.betas[1]),
                                     weight_decay=ocfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, ocfg))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
