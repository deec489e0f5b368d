"""Training progress in the terminal: Lightning's bar with short metric names, or epoch lines when
stdout is not a terminal (a log file, a batch job)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from glcnet.utils.progress import HEARTBEAT_S, duration, log


def _metrics_text(trainer: L.Trainer) -> str:
    """``loss 0.512, val_miou 0.413``: the progress-bar metrics (the epoch means where logged)."""
    shown = {k.removeprefix("train/").removesuffix("_epoch"): float(v) for k, v in trainer.progress_bar_metrics.items()
             if not k.endswith("_step") and k != "v_num"}
    return ", ".join(f"{k} {v:.4g}" for k, v in shown.items())


def _fraction_done(trainer: L.Trainer, epochs_done: int) -> float:
    """Share of the run done after ``epochs_done`` epochs and ``trainer.global_step`` steps
    (``max_steps`` or ``max_epochs``, whichever ends it first)."""
    parts = []
    if trainer.max_steps and trainer.max_steps > 0:
        parts.append(trainer.global_step / trainer.max_steps)
    if trainer.max_epochs and trainer.max_epochs > 0:
        parts.append(epochs_done / trainer.max_epochs)
    return min(1.0, max(parts)) if parts else 0.0


class EpochBar(TQDMProgressBar):
    """Lightning's bar (rate, ETA within the epoch) labelled ``<label> epoch e/E``."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"{self.label} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The latest step values under short names (``loss``, ``samples/s``, ``val_miou``)."""
        items = super().get_metrics(trainer, pl_module)
        return {k.removeprefix("train/").removesuffix("_step"): v for k, v in items.items()
                if k != "v_num" and not k.endswith("_epoch")}


class EpochLines(Callback):
    """Without a bar (not a terminal): an epoch line at most every ``interval`` s, and always the last.

    ``<label> epoch e/E: loss 0.51, val_miou 0.41 (elapsed 1m02s, ETA 12m30s)``; the ETA
    extrapolates the time of the epochs run in this process (a resumed run: since the resume)
    to the work left.
    """

    def __init__(self, label: str, interval: float = HEARTBEAT_S):
        self.label, self.interval = label, interval
        self.t0 = self.last = 0.0
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.t0 = self.last = time.monotonic()
        self.start = _fraction_done(trainer, trainer.current_epoch)  # resumed runs: the work done before

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.monotonic()
        done = _fraction_done(trainer, trainer.current_epoch + 1)
        final = done >= 1.0 or trainer.should_stop
        if not final and now - self.last < self.interval:
            return
        self.last = now
        rate = (now - self.t0) / max(done - self.start, 1e-9)
        eta = "" if final else f", ETA {duration(rate * (1 - done))}"
        log.info("%s epoch %d/%d: %s (elapsed %s%s)", self.label, trainer.current_epoch + 1, trainer.max_epochs,
                 _metrics_text(trainer), duration(now - self.t0), eta)
