"""SIGTERM/SIGINT during training: stop at the end of the current step with a resumable checkpoint."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from glcnet.engine.resume import has_checkpoint
from glcnet.utils import signals


class StopOnSignal(Callback):
    """End training at the end of the step in which SIGTERM/SIGINT arrived (see glcnet.utils.signals):
    save ``last.ckpt`` there and raise :class:`~glcnet.utils.signals.Interrupted`. All DDP ranks
    agree on the step. During validation it stops without a new checkpoint: after the batch in one
    process; under DDP at the end of the validation pass, as ranks may hold different numbers of
    val scenes (one collective per batch would deadlock them)."""

    def __init__(self, last: Path):
        self.last = Path(last)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signals.take_over()  # Lightning's SIGTERM handler (installed after setup) ends a run with exit status 0

    def _requested(self, trainer: L.Trainer) -> int:
        sig = signals.requested() or 0
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(bool(sig), all=False):
            sig = sig or signal.SIGTERM
        return sig

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        sig = self._requested(trainer)
        if sig:
            trainer.save_checkpoint(self.last)
            raise signals.Interrupted(sig, f" at epoch {trainer.current_epoch} step {trainer.global_step} "
                                           f"(checkpoint saved)")

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.world_size == 1:
            self._stop_validation(trainer)

    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._stop_validation(trainer)

    def _stop_validation(self, trainer: L.Trainer) -> None:
        sig = self._requested(trainer)
        if sig:
            raise signals.Interrupted(sig, f" during validation at epoch {trainer.current_epoch} "
                                           f"(resumes from the last checkpoint)")


def fit(trainer: L.Trainer, task: L.LightningModule, *loaders: Any, ckpt_path: str | None = None) -> None:
    """``trainer.fit`` that a signal ends at a safe point, with a resumable checkpoint (StopOnSignal)."""
    try:
        with signals.deferred():
            trainer.fit(task, *loaders, ckpt_path=ckpt_path)  # type: ignore[misc]
    except signals.Interrupted as e:
        e.resumable = has_checkpoint(Path(trainer.default_root_dir))
        raise
    except SIGTERMException:  # Lightning's own stop (a SystemExit with status 0): say what it is
        stop = signals.Interrupted(signal.SIGTERM, f" at epoch {trainer.current_epoch} step {trainer.global_step}")
        stop.resumable = has_checkpoint(Path(trainer.default_root_dir))
        raise stop from None
    if trainer.interrupted:  # stopped without an exception (Lightning swallowed one)
        raise signals.Interrupted(signal.SIGTERM, " (training did not finish)")
