"""The Lightning Trainer of ``glcnet pretrain`` and ``glcnet finetune``, and its loggers.

One CPU, one GPU, or DDP over GPUs/nodes (Lightning detects torchrun and SLURM); mixed
precision via ``trainer.precision``; ``checkpoints/last.ckpt`` (model, optimiser, scheduler,
loop state, every rank's RNG states, the run's config) written every ``checkpoint_every``
epochs for ``--resume``, and at the end of the current step when a SIGTERM/SIGINT arrives
(:mod:`glcnet.engine.interrupt`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_only

from glcnet.config import TrainerConfig
from glcnet.engine.checkpoints import AtomicCheckpointIO, RngState
from glcnet.engine.interrupt import StopOnSignal
from glcnet.engine.processes import _devices, _strategy, sync_batchnorm
from glcnet.engine.progress import EpochBar, EpochLines
from glcnet.errors import GlcnetError
from glcnet.runs import RunDir
from glcnet.utils.progress import interactive

# Lightning sets its loggers to INFO when imported: keep its start-up chatter (tips,
# "GPU available" lines) out of the user's terminal; warnings and errors still show.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def build_trainer(
    tcfg: TrainerConfig,
    run: RunDir,
    max_epochs: int,
    *,
    seed: int,
    find_unused_parameters: bool = False,
    monitor: str | None = None,
    mode: str = "max",
    early_stop: int = 0,
    callbacks: Iterable[Callback] = (),
    check_val_every_n_epoch: int = 1,
    label: str = "train",
    per_rank_bn: str = "",
) -> L.Trainer:
    """A Trainer logging to CSV + ``metrics.jsonl`` (+ TensorBoard) and checkpointing into ``RUN/checkpoints``.

    Progress: Lightning's bar (labelled ``label``) when ``tcfg.progress`` and stdout (the
    bar's stream) is a terminal; else :class:`EpochLines`. ``tcfg.tensorboard`` adds a
    TensorBoard logger writing ``RUN/tensorboard/`` (``tensorboard --logdir RUN``).

    ``last.ckpt`` is written every ``tcfg.checkpoint_every`` epochs; with ``monitor``,
    ``best.ckpt`` keeps the best value of that logged metric (``mode`` max/min) and
    ``early_stop`` > 0 stops after that many validations without improvement. ``seed``:
    the run's seed, from which every rank's random streams derive (:class:`RngState`).
    ``per_rank_bn``: a method whose batch norms stay per process (:func:`sync_batchnorm`).
    """
    ckpt_dir = run.path / "checkpoints"
    cbs: list[Callback] = []
    if monitor:
        # before "last": last.ckpt must hold the best score *including* this epoch, or a
        # resumed run would let a worse epoch replace best.ckpt
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode,
                                   save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False))
        if early_stop > 0:
            cbs.append(EarlyStopping(monitor=monitor, mode=mode, patience=early_stop))
    cbs += [
        # monitor=None + save_top_k=1: keep only the latest, under the fixed name last.ckpt
        # at every train-epoch end, also in epochs without validation (val_every > 1)
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=1, enable_version_counter=False,
                        every_n_epochs=max(1, tcfg.checkpoint_every), save_on_train_epoch_end=True),
        RngState(seed),
    ]
    cbs.append(LearningRateMonitor(logging_interval="step"))
    show_bar = tcfg.progress and interactive(sys.stdout)  # Lightning draws its bar on stdout
    cbs.append(EpochBar(label) if show_bar else EpochLines(label))
    cbs.append(StopOnSignal(ckpt_dir / "last.ckpt"))
    cbs.extend(callbacks)
    limit = tcfg.limit_batches
    limit_batches: int | float = int(limit) if limit > 1 else limit
    return L.Trainer(
        accelerator=tcfg.accelerator,
        devices=_devices(tcfg.devices),
        num_nodes=tcfg.num_nodes,
        strategy=_strategy(tcfg, find_unused_parameters),
        sync_batchnorm=sync_batchnorm(tcfg, per_rank_bn),
        precision=tcfg.precision,  # type: ignore[arg-type]  # a name that Lightning checks
        max_epochs=max_epochs,
        max_steps=tcfg.max_steps,
        limit_train_batches=limit_batches,
        log_every_n_steps=max(1, tcfg.log_every),
        check_val_every_n_epoch=max(1, check_val_every_n_epoch),
        num_sanity_val_steps=0,
        enable_progress_bar=show_bar,
        enable_model_summary=False,
        logger=_loggers(tcfg, run),
        callbacks=cbs,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run.path,
    )


def _loggers(tcfg: TrainerConfig, run: RunDir) -> list[Logger]:
    """CSV (``RUN/logs/metrics.csv``) and ``RUN/metrics.jsonl``; with ``tcfg.tensorboard`` also ``RUN/tensorboard/``."""
    csv = CSVLogger(save_dir=run.path, name="logs", version=_csv_version(run.path / "logs"))
    loggers: list[Logger] = [csv, JsonlLogger(run)]
    if tcfg.tensorboard:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=run.path, name="tensorboard", version="",
                                             default_hp_metric=False))
        except ModuleNotFoundError:  # pinned in requirements.txt, but not needed otherwise
            raise GlcnetError("trainer.tensorboard: the tensorboard package is not installed "
                              "(pip install -r requirements.txt)") from None
    return loggers


def _csv_version(logs: Path) -> str:
    """``logs/metrics.csv`` for a new run; ``logs/resume_N/`` for the N-th resume (Lightning's CSV
    logger would otherwise delete the earlier log)."""
    if not (logs / "metrics.csv").exists():
        return ""
    n = 1
    while (logs / f"resume_{n}").exists():
        n += 1
    return f"resume_{n}"


class JsonlLogger(Logger):
    """Lightning logger appending every logged metric dict to ``RUN/metrics.jsonl``."""

    def __init__(self, run: RunDir):
        super().__init__()
        self.run = run

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log({"step": step, **{k: float(v) for k, v in metrics.items()}})
