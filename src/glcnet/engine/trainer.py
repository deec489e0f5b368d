"""Shared training machinery: Lightning Trainer, loggers, checkpoints, optimiser, resume.

Used by ``glcnet pretrain`` and ``glcnet finetune``. One CPU, one GPU, or DDP over
GPUs/nodes (Lightning detects torchrun and SLURM); mixed precision via
``trainer.precision``; ``checkpoints/last.ckpt`` (model, optimiser, scheduler, loop
state, every rank's RNG states, the run's config) written every ``checkpoint_every`` epochs
for ``--resume``, and at the end of the current step when a SIGTERM/SIGINT arrives (:func:`fit`).
Checkpoints are written atomically next to their final name (:class:`AtomicCheckpointIO`):
complete or absent. :func:`check_resume` refuses a corrupt checkpoint, or settings that
cannot continue it, before the run folder is touched. The learning rate is scaled to the
global batch (:func:`scaled_lr`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from glcnet.config import OptimConfig, TrainerConfig, flat, to_dict
from glcnet.errors import GlcnetError
from glcnet.runs import RunDir
from glcnet.utils import signals
from glcnet.utils.atomic import torch_save
from glcnet.utils.progress import HEARTBEAT_S, duration, interactive, log
from glcnet.utils.rng import capture, rank_seed, restore, seed_globals

# Lightning sets its loggers to INFO when imported: keep its start-up chatter (tips,
# "GPU available" lines) out of the user's terminal; warnings and errors still show.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) and the DataLoader workers."""
    L.seed_everything(seed, workers=True, verbose=False)


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


class RngState(Callback):
    """Random streams per rank (:mod:`glcnet.utils.rng`) and their states in checkpoints.

    ``setup``: with more than one process, rank ``r`` reseeds the global Python, NumPy and
    torch RNGs with ``(seed, r)`` (one process keeps the stream of ``seed``), and the task's
    ``generator`` attribute, if any, is seeded by the task. Checkpoints hold the list of
    EVERY rank's states (global RNGs + that generator), gathered from all ranks; on
    ``--resume`` each rank restores its own, so a resumed run continues every rank's stream
    exactly. A checkpoint of another process count restores the ranks it has and warns.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            seed_globals(rank_seed(self.seed, trainer.global_rank))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        mine = capture(getattr(pl_module, "generator", None))
        states: list[Any] = [mine]
        dist = torch.distributed
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            # every rank builds the checkpoint dict (at once); rank 0 writes it
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, mine)
        checkpoint["rng"] = {"ranks": states}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("rng")
        if not rng:
            return
        states = rng["ranks"] if "ranks" in rng else [rng]  # checkpoints before per-rank states: one
        if len(states) != trainer.world_size and trainer.is_global_zero:
            log.warning(f"warning: the checkpoint holds the random streams of {len(states)} process(es), this run "
                        f"has {trainer.world_size}: ranks beyond them start fresh streams, so the resume is not exact")
        if trainer.global_rank < len(states):
            restore(states[trainer.global_rank], getattr(pl_module, "generator", None))


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


def _devices(spec: str) -> str | int:
    spec = str(spec).strip()
    return int(spec) if spec.lstrip("-").isdigit() else spec


def _on_gpu(tcfg: TrainerConfig) -> bool:
    return tcfg.accelerator in ("gpu", "cuda") or (tcfg.accelerator == "auto" and torch.cuda.is_available())


def _sync_batchnorm(tcfg: TrainerConfig) -> bool:
    """``trainer.sync_batchnorm``: true | false | null (auto: on for DDP over GPUs, as the reference code;
    off on the CPU, where torch's SyncBatchNorm does not run)."""
    value = tcfg.sync_batchnorm
    if value is True and not _on_gpu(tcfg):
        raise GlcnetError("trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm does not run on the CPU)")
    return value is True or (value is None and _on_gpu(tcfg) and _processes(tcfg) > 1)


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


def print0(*args: Any) -> None:
    """``print`` on global rank 0 only (every DDP process runs the command)."""
    if getattr(rank_zero_only, "rank", 0) == 0:
        print(*args, flush=True)


def _strategy(tcfg: TrainerConfig, find_unused: bool) -> str:
    """DDP must be told when some parameters get no gradient (e.g. SimCLR leaves the decoder unused)."""
    if not find_unused or tcfg.strategy not in ("auto", "ddp"):
        return tcfg.strategy
    return "ddp_find_unused_parameters_true" if _processes(tcfg) > 1 else tcfg.strategy


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
) -> L.Trainer:
    """A Trainer logging to CSV + ``metrics.jsonl`` (+ TensorBoard) and checkpointing into ``RUN/checkpoints``.

    Progress: Lightning's bar (labelled ``label``) when ``tcfg.progress`` and stdout (the
    bar's stream) is a terminal; else :class:`EpochLines`. ``tcfg.tensorboard`` adds a
    TensorBoard logger writing ``RUN/tensorboard/`` (``tensorboard --logdir RUN``).

    ``last.ckpt`` is written every ``tcfg.checkpoint_every`` epochs; with ``monitor``,
    ``best.ckpt`` keeps the best value of that logged metric (``mode`` max/min) and
    ``early_stop`` > 0 stops after that many validations without improvement. ``seed``:
    the run's seed, from which every rank's random streams derive (:class:`RngState`).
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
        sync_batchnorm=_sync_batchnorm(tcfg),
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints through :func:`glcnet.utils.atomic.torch_save`: a temporary file in the
    checkpoint's own folder, fsynced, then renamed (Lightning's own goes through the system temp
    folder, so its final step can be a non-atomic cross-device copy)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        torch_save(checkpoint, path)


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


def resume_ckpt(run: RunDir | Path | str) -> str | None:
    """``RUN/checkpoints/last.ckpt`` if a previous (possibly killed) run left one."""
    p = (run.path if isinstance(run, RunDir) else Path(run)) / "checkpoints" / "last.ckpt"
    return str(p) if p.is_file() else None


def has_checkpoint(run: Path) -> bool:
    """A run folder worth keeping after a failure: it can be resumed."""
    return resume_ckpt(run) is not None


# settings that may differ when a run is resumed (longer schedule, other hardware, logging)
MAY_CHANGE_ON_RESUME = ("out", "optim.epochs", "trainer.max_steps", "trainer.progress", "trainer.log_every",
                        "trainer.num_workers", "trainer.checkpoint_every", "trainer.devices", "trainer.num_nodes",
                        "trainer.strategy", "trainer.accelerator", "early_stop", "eval.")
_PATH_KEYS = ("data", "init")


def _same(key: str, a: Any, b: Any) -> bool:
    if key in _PATH_KEYS and isinstance(a, str) and isinstance(b, str) and "none" not in (a.lower(), b.lower()):
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def check_resume(last: str | Path, kind: str, cfg: Any) -> None:
    """Refuse (one line, nothing touched) to resume ``last`` if it is unreadable, of another kind,
    or was started with settings other than ``cfg`` outside :data:`MAY_CHANGE_ON_RESUME`."""
    last = Path(last)
    ckpt = load_torch(last, "training checkpoint")
    meta = ckpt.get("glcnet") or {}
    if "state_dict" not in ckpt or "loops" not in ckpt:
        raise GlcnetError(f"{last}: not a Lightning training checkpoint; cannot resume from it")
    if meta.get("kind") not in (None, kind):
        raise GlcnetError(f"{last}: a {meta['kind']} checkpoint; glcnet {kind} cannot resume it")
    saved = meta.get("config")
    if saved is None:  # checkpoints of earlier versions: the run's config.yaml
        import yaml

        with contextlib.suppress(OSError, yaml.YAMLError):
            saved = yaml.safe_load((last.parent.parent / "config.yaml").read_text())
    if not isinstance(saved, dict):
        return
    old, new = flat(saved), flat(to_dict(cfg))
    for key in sorted(set(old) | set(new)):
        if key.startswith(MAY_CHANGE_ON_RESUME) or key in MAY_CHANGE_ON_RESUME:
            continue
        if not _same(key, old.get(key), new.get(key)):
            raise GlcnetError(f"{last.parent.parent}: cannot resume with {key}={new.get(key)!r}: the run was "
                              f"started with {key}={old.get(key)!r} (resume with the run's own settings, --config "
                              f"{last.parent.parent / 'config.yaml'}, or choose another --out)")


class ConfigInCheckpoint(Callback):
    """Store ``{"kind", "config"}`` in every checkpoint, so that --resume can check its settings."""

    def __init__(self, kind: str, cfg: Any):
        self.meta = {"kind": kind, "config": to_dict(cfg)}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["glcnet"] = self.meta


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


def configure_optim(params: Iterable[torch.nn.Parameter], ocfg: OptimConfig,
                    lr: float | None = None) -> OptimizerLRSchedulerConfig:
    """Adam(lr, betas, weight_decay) + per-epoch schedule, as Lightning's ``configure_optimizers``;
    ``lr`` (default ``ocfg.lr``): the rate for the global batch (:func:`scaled_lr`)."""
    lr_factor(0, ocfg)  # validate the schedule name early
    opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=ocfg.lr if lr is None else lr,
                           betas=(ocfg.betas[0], ocfg.betas[1]), weight_decay=ocfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, ocfg))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def load_torch(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """``torch.load`` a checkpoint dict, with one-line errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise GlcnetError(f"{p}: {what} not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, not a torch file
        raise GlcnetError(f"{p}: not a readable {what} ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise GlcnetError(f"{p}: not a glcnet {what} (expected a dict)")
    return obj


def loader_workers(requested: int) -> int:
    """Cap DataLoader workers at the CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(0, min(requested, cpus))
