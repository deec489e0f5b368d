"""The processes and devices of a run, and what each process does for itself.

:func:`check_trainer` refuses devices this machine does not have; ``_processes`` counts the
processes a run will have (devices per node x nodes), from which the DDP strategy and
SyncBatchNorm follow; every process seeds itself (:func:`seed_everything`), prints on rank 0
only (:func:`print0`) and caps its DataLoader workers at its CPUs (:func:`loader_workers`).
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from glcnet.config import TrainerConfig
from glcnet.errors import GlcnetError


def _devices(spec: str) -> str | int:
    spec = str(spec).strip()
    return int(spec) if spec.lstrip("-").isdigit() else spec


def _processes(tcfg: TrainerConfig) -> int:
    """Processes the run will have: devices per node (auto: the GPUs) x nodes."""
    dev = _devices(tcfg.devices)
    gpus = torch.cuda.device_count() if tcfg.accelerator in ("auto", "gpu", "cuda") else 0
    if dev in ("auto", -1, "-1"):
        n = gpus
    elif isinstance(dev, int):
        n = dev
    else:  # a list of device ids, "0,1" or "[0, 1]"
        n = len([d for d in str(dev).strip("[]").split(",") if d.strip()])
    return max(1, n) * tcfg.num_nodes


def _on_gpu(tcfg: TrainerConfig) -> bool:
    return tcfg.accelerator in ("gpu", "cuda") or (tcfg.accelerator == "auto" and torch.cuda.is_available())


def _strategy(tcfg: TrainerConfig, find_unused: bool) -> str:
    """DDP must be told when some parameters get no gradient (e.g. SimCLR leaves the decoder unused)."""
    if not find_unused or tcfg.strategy not in ("auto", "ddp"):
        return tcfg.strategy
    return "ddp_find_unused_parameters_true" if _processes(tcfg) > 1 else tcfg.strategy


def sync_batchnorm(tcfg: TrainerConfig, per_rank: str = "") -> bool:
    """``trainer.sync_batchnorm``: true | false | null (auto: on for DDP over GPUs, as the reference code;
    off on the CPU, where torch's SyncBatchNorm does not run).

    ``per_rank``: the name of a method whose batch norms must stay per process (MoCo's shuffle-BN:
    the key encoder sees the global batch shuffled over the ranks, so that a query and its key are
    normalised with other samples; synchronised statistics would undo that). For it, null means
    off on GPUs as on the CPU (one regime everywhere, as facebookresearch/moco), and true is refused.
    """
    value = tcfg.sync_batchnorm
    if value is True and per_rank:
        raise GlcnetError(f"trainer.sync_batchnorm=true: {per_rank} keeps batch norm per process (shuffle-BN, "
                          "as MoCo); synchronised statistics would let queries find their keys through them "
                          "(leave it null)")
    if value is True and not _on_gpu(tcfg):
        raise GlcnetError("trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm does not run on the CPU)")
    return value is True or (value is None and not per_rank and _on_gpu(tcfg) and _processes(tcfg) > 1)


def check_trainer(tcfg: TrainerConfig) -> None:
    """A device asked for that this machine does not have: one line, before any work."""
    acc = str(tcfg.accelerator).lower()
    dev = _devices(tcfg.devices)
    if acc in ("gpu", "cuda"):
        n = torch.cuda.device_count()
        if n == 0:
            raise GlcnetError(f"trainer.accelerator={tcfg.accelerator}: no CUDA GPU is available on this machine "
                              "(use trainer.accelerator=cpu, or auto)")
        if isinstance(dev, int) and dev > n:
            raise GlcnetError(f"trainer.devices={dev}: only {n} GPU(s) on this machine")
    elif acc == "auto" and isinstance(dev, int) and dev > 1 and torch.cuda.device_count() == 0:
        raise GlcnetError(f"trainer.devices={dev}: no GPU on this machine (trainer.accelerator=cpu runs {dev} CPU "
                          "processes, if that is what you want)")
    elif acc not in ("auto", "cpu", "mps", "tpu"):
        raise GlcnetError(f"trainer.accelerator: unknown {tcfg.accelerator!r} (valid: auto, cpu, gpu)")
    if isinstance(dev, int) and (dev == 0 or dev < -1):
        raise GlcnetError(f"trainer.devices={tcfg.devices}: expected auto, -1 (all) or a positive count")
    _check_names(tcfg)


def _check_names(tcfg: TrainerConfig) -> None:
    """Precision and strategy names that Lightning accepts (its own lists): one line now, not a
    library traceback once the run folder exists."""
    import typing

    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
    from lightning.pytorch.strategies import StrategyRegistry

    precisions = (*typing.get_args(_PRECISION_INPUT_STR), *typing.get_args(_PRECISION_INPUT_STR_ALIAS))
    if str(tcfg.precision) not in precisions:
        raise GlcnetError(f"trainer.precision: unknown {tcfg.precision!r} (valid: {', '.join(precisions)})")
    strategies = ("auto", *StrategyRegistry.available_strategies())
    if tcfg.strategy not in strategies:
        raise GlcnetError(f"trainer.strategy: unknown {tcfg.strategy!r} (valid: auto, ddp, ddp_spawn, fsdp, "
                          "deepspeed, ... as Lightning names them)")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) and the DataLoader workers."""
    L.seed_everything(seed, workers=True, verbose=False)


def print0(*args: Any) -> None:
    """``print`` on global rank 0 only (every DDP process runs the command)."""
    if getattr(rank_zero_only, "rank", 0) == 0:
        print(*args, flush=True)


def loader_workers(requested: int) -> int:
    """Cap DataLoader workers at the CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(0, min(requested, cpus))
