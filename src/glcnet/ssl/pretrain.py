"""``glcnet pretrain``: self-supervised pretraining of DeepLabv3+ on unlabeled tiles.

The loader only reads raw tiles (memory-mapped windows, cheap); the two augmented views
and their patch correspondence are made *on the training device*, batched, inside the
method's ``forward`` (or, with ``views.in_loader=true``, in the DataLoader workers by
:class:`~glcnet.transforms.ViewCollate`, and the step receives :class:`~glcnet.transforms.Views`).
Writes into the run directory:

    config.yaml, run.json, metrics.jsonl, logs/   (see glcnet.runs)
    checkpoints/last.ckpt                         full state for --resume
    pretrained.pt                                 the network for fine-tuning (design.md), written
                                                  only when training has finished
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch.utils.data import DataLoader

from glcnet import outputs
from glcnet.config import PretrainConfig, add_config_args, check_values, config_from_args, replace, to_dict
from glcnet.engine import (
    ConfigInCheckpoint,
    build_trainer,
    check_optim,
    check_trainer,
    configure_optim,
    fit,
    has_checkpoint,
    loader_workers,
    previous_run,
    print0,
    scaled_lr,
    seed_everything,
)
from glcnet.engine.processes import sync_batchnorm
from glcnet.errors import GlcnetError
from glcnet.models.deeplab import check_atrous_rates, resolved
from glcnet.runs import RunDir
from glcnet.ssl.base import SSLMethod
from glcnet.transforms import ViewCollate, Views
from glcnet.utils.atomic import torch_save
from glcnet.utils.memory import keep_freed_memory
from glcnet.utils.progress import duration, log
from glcnet.utils.rng import rank_seed


def _batch_size(batch: dict[str, torch.Tensor] | Views) -> int:
    """Samples in a batch: tiles ``{"image": [B, C, H, W]}`` (float in [0, 1] or uint8 = value / 255),
    or :class:`Views` made by the DataLoader workers (``views.in_loader``)."""
    return (batch.view1 if isinstance(batch, Views) else batch["image"]).shape[0]


class PretrainTask(L.LightningModule):
    """Lightning wrapper: one optimiser step per batch of raw tiles, logs every loss term.

    Throughput: Lightning's ``ThroughputMonitor`` (:func:`throughput_monitor`) logs
    ``train/device/samples_per_sec`` (and, with several processes, the global
    ``train/samples_per_sec``) to ``metrics.jsonl``; the step shows the latest figure in the
    progress bar as ``samples/s``.

    Owns ``generator``, the CPU generator of every random draw of the method (views,
    patches, masks...), seeded by ``(cfg.seed, global rank)`` in :meth:`setup`; its state is
    saved per rank in checkpoints (``glcnet.engine.RngState``). ``lr``: the learning rate
    for the global batch (``glcnet.engine.scaled_lr``). Epoch values are averaged over ranks.
    """

    flops_per_batch: int | None = None  # read by ThroughputMonitor (no FLOP count, no MFU)

    def __init__(self, method: SSLMethod, cfg: PretrainConfig, export: dict[str, Any], out: Path,
                 lr: float | None = None):
        super().__init__()
        self.method = method
        self.cfg = cfg
        self.export_meta = export
        self.out = out
        self.lr = cfg.optim.lr if lr is None else lr
        self.generator = torch.Generator()

    def setup(self, stage: str) -> None:
        self.generator.manual_seed(rank_seed(self.cfg.seed, self.global_rank))  # --resume: restored after this

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, ...]`` per rank -> ``[W * n, ...]`` in rank order, gradients back to each rank's slice.

        Lightning's ``all_gather(sync_grads=True)``: every rank passes the same shape, which
        holds for every gather of the losses (GLCNet's local loss gathers all ``B x P``
        patches with their ``valid`` mask, not a variable count of valid ones).
        """
        if self.trainer.world_size <= 1:
            return x
        gathered = cast(torch.Tensor, self.all_gather(x, sync_grads=True))  # [W, n, ...]
        return gathered.flatten(0, 1)  # [W * n, ...]

    def training_step(self, batch: dict[str, torch.Tensor] | Views, batch_idx: int) -> torch.Tensor:
        if isinstance(batch, Views):  # views.in_loader: made by the DataLoader workers
            images: torch.Tensor | Views = batch
        else:
            images = batch["image"]  # [B, C, H, W] float in [0, 1], or uint8 (= value / 255)
            if self.cfg.trainer.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
        bs = _batch_size(batch)
        out = self.method(images, gather=self._gather, generator=self.generator)
        for k, v in out.items():
            self.log(f"train/{k}", v.detach().float(), prog_bar=k == "loss", on_step=True, on_epoch=True,
                     batch_size=bs, sync_dist=True)
        return out["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.method.on_after_step()
        logged = self.trainer.logged_metrics  # ThroughputMonitor's figures (rank 0, every log_every steps)
        rate = logged.get("train/samples_per_sec", logged.get("train/device/samples_per_sec"))
        if rate is not None:
            self.log("samples/s", float(rate), prog_bar=True, logger=False)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        return configure_optim(self.method.parameters(), self.cfg.optim, lr=self.lr)

    def export(self, epochs_done: int) -> Path:
        """Write ``pretrained.pt`` (rank 0 only, atomically) after ``epochs_done`` epochs."""
        path = self.out / "pretrained.pt"
        if self.trainer.is_global_zero:
            state = {k: v.detach().cpu() for k, v in self.method.pretrained_state_dict().items()}
            torch_save({**self.export_meta, "epochs": epochs_done, "step": self.global_step,
                        "state_dict": state}, path)
        return path


def throughput_monitor(cfg: PretrainConfig) -> ThroughputMonitor:
    """Lightning's samples/s (and batches/s) over the last ``trainer.log_every`` steps."""
    return ThroughputMonitor(batch_size_fn=_batch_size, window_size=max(2, cfg.trainer.log_every + 1))


def _pool(cfg: PretrainConfig, ds: Any) -> Any:
    """The train + unlabelled tiles pretraining draws from, checked against the settings."""
    from glcnet.data.prepared import TileDataset

    pool = TileDataset(ds, splits=("train", "unlabeled"), with_mask=False, uint8=True)  # 8-bit data: raw uint8
    if len(pool) == 0:
        raise GlcnetError(f"{cfg.data}: no train/unlabeled tiles to pretrain on")
    tile = pool[0]["image"].shape[-1]
    if tile < cfg.views.size:
        raise GlcnetError(f"{cfg.data}: tiles are {tile} px but views.size is {cfg.views.size}; "
                          f"set views.size <= {tile} (a multiple of 16)")
    if cfg.views.size % 16:
        raise GlcnetError(f"views.size must be a multiple of 16, got {cfg.views.size}")
    if len(pool) < cfg.trainer.batch_size:
        raise GlcnetError(f"{cfg.data}: {len(pool)} tiles, fewer than trainer.batch_size={cfg.trainer.batch_size}")
    return pool


def _pool_loader(cfg: PretrainConfig, pool: Any, world_size: int = 1,
                 generator: torch.Generator | None = None) -> DataLoader:
    """Batches of ``pool`` for this process (full batches only)."""
    bs = cfg.trainer.batch_size
    if len(pool) < bs * world_size:
        per = f" x {world_size} processes" if world_size > 1 else ""
        raise GlcnetError(f"{cfg.data}: {len(pool)} tiles, fewer than trainer.batch_size={bs}{per}")
    workers = loader_workers(cfg.trainer.num_workers)
    collate = ViewCollate(cfg.views, generator) if cfg.views.in_loader else None
    return DataLoader(pool, batch_size=bs, shuffle=True, drop_last=True, num_workers=workers, collate_fn=collate,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def _probe_callbacks(cfg: PretrainConfig, ds: Any) -> tuple[list[Any], str]:
    """The online dense probe (``probe.every`` != 0) when the data set has what it needs, else a note
    (logged once the run has started)."""
    from glcnet.finetune.probe import DenseProbe, ProbeCallback

    if cfg.probe.every == 0:
        return [], ""
    why = DenseProbe.unavailable(ds, cfg.probe.fraction)
    if why:
        return [], f"probe off: {cfg.data}: {why}"
    return [ProbeCallback(DenseProbe.from_config(ds, cfg.probe), cfg.probe.every)], ""


def run(cfg: PretrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Pretrain ``cfg.method.name`` on ``cfg.data``; return the path of ``pretrained.pt``.

    Every check (config values, device, data, the checkpoint to resume and its settings)
    runs before the run folder is claimed (glcnet.outputs), so a refused run writes nothing.
    """
    from glcnet.data.prepared import PreparedDataset
    from glcnet.ssl import build_method

    check_values(cfg)
    check_trainer(cfg.trainer)
    check_optim(cfg.optim)
    if not cfg.data:
        raise GlcnetError("pretrain: no data set given (--data PREPARED or data: in the config)")
    keep_freed_memory()  # views batch after batch without page faults; inherited by the DataLoader workers
    ds = PreparedDataset(cfg.data)
    cfg = replace(cfg, data=str(Path(cfg.data).resolve()))  # the saved config works from any folder
    out = Path(cfg.out)
    last, hint = previous_run(out, "pretrain", cfg, resume, result="pretrained.pt", noun="pretraining")
    seed_everything(cfg.seed)
    method = build_method(cfg, ds.in_channels, ds.mean, ds.std)
    if cfg.trainer.channels_last:
        method = method.to(memory_format=torch.channels_last)
    pool = _pool(cfg, ds)  # checked (tile and view sizes, enough tiles) before the run folder is claimed
    check_atrous_rates(cfg.model, *method.network_input())
    per_rank_bn = cfg.method.name if method.per_rank_batchnorm else ""
    sync_batchnorm(cfg.trainer, per_rank_bn)  # refused settings: before the run folder is claimed
    probes, probe_note = _probe_callbacks(cfg, ds)
    callbacks = [throughput_monitor(cfg), *probes]
    export = {
        "kind": "pretrained",
        "method": cfg.method.name,
        "model": to_dict(resolved(cfg.model)),  # rates explicit: the checkpoint describes its network
        "in_channels": ds.in_channels,
        "bands": list(ds.bands),
        "mean": list(map(float, ds.mean)),
        "std": list(map(float, ds.std)),
        "value_range": [list(map(float, r)) for r in ds.value_range],
        "nodata": ds.nodata,
        "data_id": ds.identity,
    }
    with outputs.run_folder(out, "pretrain", resume=resume, overwrite=overwrite, inputs=[cfg.data], hint=hint,
                            keep=has_checkpoint) as folder:  # out, or its replacement (--overwrite)
        run_dir = RunDir.create(folder, cfg, cfg.seed,
                                extra={"task": "pretrain", "resumed_from": last if resume else None})
        if probe_note:
            log.info(probe_note)
        trainer = build_trainer(cfg.trainer, run_dir, max_epochs=cfg.optim.epochs, seed=cfg.seed,
                                find_unused_parameters=method.find_unused_parameters,
                                callbacks=[*callbacks, ConfigInCheckpoint("pretrain", cfg, ds.identity)],
                                label=f"pretrain {cfg.method.name}", per_rank_bn=per_rank_bn)
        lr, lr_msg = scaled_lr(cfg.optim, cfg.trainer.batch_size, trainer.world_size)
        log.info(lr_msg)
        task = PretrainTask(method, cfg, export, folder, lr=lr)
        loader = _pool_loader(cfg, pool, trainer.world_size, task.generator)
        t0 = time.monotonic()
        log.info("pretrain %s: %d tiles, %d epochs%s -> %s", cfg.method.name, len(cast(Sized, loader.dataset)),
                 cfg.optim.epochs, " (resumed)" if resume else "", out)
        fit(trainer, task, loader, ckpt_path=last if resume else None)
        task.export(epochs_done=trainer.current_epoch)  # also covers a max_steps stop mid-epoch
    path = out / "pretrained.pt"
    loss = trainer.callback_metrics.get("train/loss_epoch", trainer.callback_metrics.get("train/loss"))
    log.info("pretrain %s: done, %d steps, loss %s, in %s", cfg.method.name, trainer.global_step,
             "-" if loss is None else f"{float(loss):.4g}", duration(time.monotonic() - t0))
    return path


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet pretrain``."""
    add_config_args(parser, "pretrain_cpu, pretrain_paper")
    parser.add_argument("--method", help="glcnet, glcnet_no_style, glcnet_no_global, glcnet_no_local, glcnet_fn, "
                        "glcnet_m, glcnet_m_fn, vicregl, simclr, mocov2, inpainting, jigsaw")


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet pretrain``; returns the exit status."""
    cfg = config_from_args(PretrainConfig, args, {"data": "data", "out": "out", "method": "method.name"})
    path = run(cfg, resume=args.resume, overwrite=args.overwrite)
    print0(f"pretrained weights: {path}")
    return 0
