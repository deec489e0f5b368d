"""Shared training machinery of ``glcnet pretrain`` and ``glcnet finetune``, one job a module.

- :mod:`~glcnet.engine.trainer`: the Lightning Trainer (callbacks, loggers: CSV, ``metrics.jsonl``, TensorBoard).
- :mod:`~glcnet.engine.processes`: devices and processes (device checks, DDP strategy, SyncBatchNorm, seeding,
  rank-0 printing, DataLoader workers).
- :mod:`~glcnet.engine.progress`: the progress bar, or epoch lines without a terminal.
- :mod:`~glcnet.engine.checkpoints`: atomic checkpoints holding every rank's RNG states and the run's config.
- :mod:`~glcnet.engine.resume`: ``--resume``: the checkpoint to continue and the checks that refuse it.
- :mod:`~glcnet.engine.interrupt`: SIGTERM/SIGINT end training at a safe point with a resumable checkpoint.
- :mod:`~glcnet.engine.optim`: AdamW (or Adam), the learning-rate schedule, the rate scaled to the global batch.

The names below are the engine's interface; import them from ``glcnet.engine``.
"""

from glcnet.engine.checkpoints import AtomicCheckpointIO, ConfigInCheckpoint, RngState, load_torch
from glcnet.engine.interrupt import StopOnSignal, fit
from glcnet.engine.optim import check_optim, configure_optim, lr_factor, scaled_lr
from glcnet.engine.processes import check_trainer, loader_workers, print0, seed_everything
from glcnet.engine.progress import EpochBar, EpochLines
from glcnet.engine.resume import MAY_CHANGE_ON_RESUME, check_resume, has_checkpoint, previous_run, resume_ckpt
from glcnet.engine.trainer import JsonlLogger, build_trainer

__all__ = [
    "MAY_CHANGE_ON_RESUME",
    "AtomicCheckpointIO",
    "ConfigInCheckpoint",
    "EpochBar",
    "EpochLines",
    "JsonlLogger",
    "RngState",
    "StopOnSignal",
    "build_trainer",
    "check_optim",
    "check_resume",
    "check_trainer",
    "configure_optim",
    "fit",
    "has_checkpoint",
    "load_torch",
    "loader_workers",
    "lr_factor",
    "previous_run",
    "print0",
    "resume_ckpt",
    "scaled_lr",
    "seed_everything",
]
