"""``glcnet finetune``: fine-tune DeepLabv3+ on a labelled fraction, select on the val scenes.

``glcnet finetune --config FILE [--data DIR] [--out DIR] [--init CKPT|none] [--fraction F]
[--load encoder|encoder+aspp|all] [--freeze none|encoder|encoder+aspp] [--resume] [key=value ...]``

Writes into the run directory (``out``)::

    config.yaml, run.json, metrics.jsonl, logs/   (glcnet.runs): train_loss, val_miou/kappa/oa/mean_f1
    init.json                                     weight-loading report (loaded / missing / skipped keys)
    checkpoints/last.ckpt, checkpoints/best.ckpt  Lightning state (--resume), best = max val_miou
    model.pt                                      best validation epoch (design.md format)
    model_last.pt                                 last epoch

If ``trainer.max_steps`` ends training before any validation pass (smoke runs), ``model.pt``
holds the last weights and says so (``selected_on``), with a warning.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import Any, cast

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from glcnet import outputs
from glcnet.config import FinetuneConfig, add_config_args, check_values, config_from_args, replace
from glcnet.engine import (
    ConfigInCheckpoint,
    build_trainer,
    check_optim,
    check_trainer,
    fit,
    has_checkpoint,
    load_torch,
    loader_workers,
    previous_run,
    print0,
    scaled_lr,
    seed_everything,
)
from glcnet.errors import GlcnetError
from glcnet.finetune.sliding import check_window
from glcnet.finetune.task import MONITOR, SegmentationTask, first
from glcnet.finetune.weights import load_pretrained, model_checkpoint, resolve_init, summary
from glcnet.models import DeepLab, build_model
from glcnet.models.batchnorm import chunks, recalibrate
from glcnet.models.deeplab import PARTS, check_atrous_rates
from glcnet.runs import RunDir
from glcnet.utils.atomic import torch_save, write_json
from glcnet.utils.progress import duration, log

CLASS_WEIGHTS = ("none", "inverse", "sqrt-inverse")
FREEZE = ("none", "encoder", "encoder+aspp")  # parts of glcnet.models.deeplab.PARTS that may be frozen


def class_weights(kind: str, counts: list[int] | None) -> torch.Tensor | None:
    """``w_c = (N / (K n_c))^p`` with p = 1 (inverse) or 1/2 (sqrt-inverse); absent classes get 0."""
    if kind == "none":
        return None
    if kind not in CLASS_WEIGHTS:
        raise GlcnetError(f"class_weights: unknown {kind!r} (valid: {', '.join(CLASS_WEIGHTS)})")
    if not counts:
        raise GlcnetError("class_weights: the data set has no train class counts (dataset.json class_counts)")
    n = torch.tensor(counts, dtype=torch.float64)
    w = torch.where(n > 0, n.sum() / (len(n) * n.clamp(min=1)), torch.zeros_like(n))
    return (w if kind == "inverse" else w.sqrt()).float()


class RankShard(DistributedSampler):
    """Rank ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...``, never padded, so that every val
    scene is counted exactly once in the pooled confusion matrix (torch's DistributedSampler
    repeats items to even out the ranks, which would count some scenes twice)."""

    def __init__(self, n: int, num_replicas: int, rank: int):
        super().__init__(cast(Any, range(n)), num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(cast(Sized, self.dataset)), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(cast(Sized, self.dataset)), self.num_replicas))


class EpochShard(DistributedSampler):
    """Training samples of one rank: ``per_rank`` indices per epoch. All ranks draw the same
    list of ``W per_rank`` indices from ``(seed, epoch)`` and take their slice: a shuffle
    (wrapped round to fill the ranks) when there are at least ``W x batch`` items, else draws
    with replacement, so that a tiny labelled subset still fills a batch on every rank."""

    def __init__(self, n: int, num_replicas: int, rank: int, batch_size: int, seed: int):
        super().__init__(cast(Any, range(n)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.per_rank = max(-(-n // num_replicas), batch_size)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n, total = len(cast(Sized, self.dataset)), self.per_rank * self.num_replicas
        if n >= self.num_replicas * self.batch_size:
            perm = torch.randperm(n, generator=g)
            idx = torch.cat([perm] * -(-total // n))[:total]
        else:
            idx = torch.randint(n, (total,), generator=g)
        return iter(idx[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank


def _train_tiles(cfg: FinetuneConfig, ds: Any) -> Any:
    """Random crops of the labelled tiles of the fraction, checked against the settings."""
    from glcnet.data.prepared import TileDataset

    if cfg.crop % 16:
        raise GlcnetError(f"crop: must be a multiple of 16, got {cfg.crop}")
    check_atrous_rates(cfg.model, cfg.crop, f"crop={cfg.crop}")
    tiles = TileDataset(ds, splits=("train",), fraction=cfg.fraction, with_mask=True, crop=cfg.crop, augment=True,
                        subset_seed=cfg.subset_seed, subset=cfg.subset or None)
    if cfg.trainer.batch_size < 2:
        raise GlcnetError("trainer.batch_size: must be >= 2 (batch norm in the ASPP pooling branch)")
    return tiles


def _train_loader(cfg: FinetuneConfig, tiles: Any, world_size: int = 1, rank: int = 0) -> DataLoader:
    """Batches of ``tiles``; an epoch is max(#tiles, batch) samples (per process:
    max(#tiles / processes, batch)), full batches only."""
    bs = cfg.trainer.batch_size
    if world_size > 1:
        sampler: Sampler = EpochShard(len(tiles), world_size, rank, bs, cfg.seed)
    else:  # with replacement so that a tiny labelled subset (1% of few tiles) still fills a batch
        sampler = RandomSampler(tiles, replacement=len(tiles) < bs, num_samples=max(len(tiles), bs))
    workers = loader_workers(cfg.trainer.num_workers)
    return DataLoader(tiles, batch_size=bs, sampler=sampler, drop_last=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def _load_net(lightning_ckpt: Path, net: DeepLab) -> int:
    """Put the network stored in a Lightning checkpoint into ``net``; return its (0-based) epoch."""
    state = load_torch(lightning_ckpt, "checkpoint", weights_only=False)  # this run's own file
    net.load_state_dict({k[len("net."):]: v for k, v in state["state_dict"].items() if k.startswith("net.")})
    return int(state["epoch"])


def selected_val_metrics(run_dir: str | Path) -> dict[str, float]:
    """Val-scene metrics of the selected validation pass (max ``val_miou``, the first on ties),
    read from the run's ``metrics.jsonl``: ``{"kappa": .., "miou": .., "oa": .., "mean_f1": ..}``;
    empty when no validation pass ran."""
    rows = [row for row in RunDir(run_dir).read_metrics() if MONITOR in row]
    if not rows:
        return {}
    best = max(rows, key=lambda r: r[MONITOR])  # max keeps the first of equal values
    return {k[len("val_"):]: float(v) for k, v in best.items() if k.startswith("val_")}


def run(cfg: FinetuneConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Fine-tune per ``cfg``; return the ``model.pt`` of the best validation epoch.

    Every check (values, device, data, init checkpoint, the checkpoint to resume and its
    settings) runs before the run folder is claimed (glcnet.outputs).
    """
    from glcnet.data.prepared import PreparedDataset, SceneDataset, sample_tiles

    check_values(cfg)
    check_trainer(cfg.trainer)
    check_optim(cfg.optim)
    if not cfg.data:
        raise GlcnetError("finetune: no data set given (--data PREPARED or data: in the config)")
    if cfg.freeze not in FREEZE:
        raise GlcnetError(f"freeze: expected one of {', '.join(FREEZE)}, got {cfg.freeze!r}")
    if not cfg.loaded_lr_mult > 0:
        raise GlcnetError(f"loaded_lr_mult: must be > 0 (--freeze keeps a part as loaded), got {cfg.loaded_lr_mult}")
    check_window(cfg.eval.window, cfg.eval.stride)
    if not 1 <= cfg.val_every <= cfg.optim.epochs:
        raise GlcnetError(f"val_every: must be in 1..optim.epochs ({cfg.optim.epochs}), got {cfg.val_every}")
    ds = PreparedDataset(cfg.data)
    init = resolve_init(cfg.init)  # paths resolved: the saved config works from any folder
    cfg = replace(cfg, data=str(Path(cfg.data).resolve()), init=str(init.resolve()) if init else cfg.init,
                  subset=str(Path(cfg.subset).resolve()) if cfg.subset else "")
    out = Path(cfg.out)
    last, hint = previous_run(out, "finetune", cfg, resume, result="model.pt", noun="fine-tuning")
    val = SceneDataset(ds, "val")  # model selection: val scenes only, never test
    seed_everything(cfg.seed)
    net = build_model(cfg.model, ds.in_channels, num_classes=ds.num_classes, mean=ds.mean, std=ds.std)
    report = load_pretrained(net, cfg.init, cfg.load, cfg.model)
    tiles = _train_tiles(cfg, ds)  # checked (crop, batch size) before the run folder is claimed
    if cfg.freeze != "none" and cfg.bn_tiles > 0:  # the frozen part's statistics: the same regime for every init
        recalibrate(net, chunks(sample_tiles(ds, ("train", "unlabeled"), cfg.bn_tiles), cfg.trainer.batch_size))
    weights = class_weights(cfg.class_weights, (ds.meta.get("class_counts") or {}).get("train"))
    with outputs.run_folder(out, "finetune", resume=resume, overwrite=overwrite, hint=hint, keep=has_checkpoint,
                            inputs=[cfg.data, resolve_init(cfg.init)]) as folder:  # out, or its replacement
        log.info(summary(report))
        run_dir = RunDir.create(folder, cfg, cfg.seed,
                                extra={"task": "finetune", "resumed_from": last if resume else None})
        if outputs.rank() == 0:
            write_json(folder / "init.json", report)
        frozen = () if cfg.freeze == "none" else PARTS[cfg.freeze]
        trainer = build_trainer(cfg.trainer, run_dir, cfg.optim.epochs, seed=cfg.seed, monitor=MONITOR, mode="max",
                                early_stop=cfg.early_stop, check_val_every_n_epoch=cfg.val_every, label="finetune",
                                callbacks=[ConfigInCheckpoint("finetune", cfg, ds.identity)])
        lr, lr_msg = scaled_lr(cfg.optim, cfg.trainer.batch_size, trainer.world_size)
        slow = () if report["init"] == "none" else PARTS[cfg.load]
        if slow and cfg.loaded_lr_mult != 1.0:
            lr_msg += f"; the loaded {cfg.load} at x{cfg.loaded_lr_mult:g} (loaded_lr_mult)"
        if slow and cfg.warmup_steps:
            lr_msg += f"; the loaded {cfg.load} waits {cfg.warmup_steps} steps (warmup_steps)"
        log.info(lr_msg)
        val_eval = replace(cfg.eval, stride=min(cfg.val_stride, cfg.eval.window) or cfg.eval.stride)  # model selection
        task = SegmentationTask(net, cfg.optim, val_eval, ds.ignore_index, weights, frozen=frozen, lr=lr,
                                slow=slow, slow_mult=cfg.loaded_lr_mult, warmup=cfg.warmup_steps)
        loader = _train_loader(cfg, tiles, trainer.world_size, trainer.global_rank)
        # every val pixel once over all ranks: one pooled confusion matrix (SegmentationTask)
        shard = RankShard(len(val), trainer.world_size, trainer.global_rank) if trainer.world_size > 1 else None
        val_loader = DataLoader(val, batch_size=1, collate_fn=first, num_workers=0, sampler=shard)
        t0 = time.monotonic()
        fit(trainer, task, loader, val_loader, ckpt_path=last if resume else None)
        if trainer.is_global_zero:
            last_epoch, epoch, score = _export(cfg, ds, net, report, trainer, folder)
            log.info("finetune: done, %d epochs, model.pt = epoch %d%s, in %s", last_epoch + 1, epoch + 1,
                     "" if score is None else f" ({MONITOR} {score:.4f})", duration(time.monotonic() - t0))
    return out / "model.pt"


def _export(cfg: FinetuneConfig, ds: Any, net: DeepLab, report: dict[str, Any], trainer: Any,
            out: Path) -> tuple[int, int, float | None]:
    """``model_last.pt`` (last epoch) and ``model.pt`` (best validation epoch): the run's finished products.
    Returns (last epoch, selected epoch, its score), 0-based."""
    best = out / "checkpoints" / "best.ckpt"
    meta: dict[str, Any] = dict(model_cfg=cfg.model, bands=ds.bands, value_range=ds.value_range, classes=ds.classes,
                colors=ds.colors or [[0, 0, 0]] * ds.num_classes, ignore_index=ds.ignore_index)
    init = report["init"] if report["init"] == "none" else str(Path(report["init"]).resolve())
    extra = dict(data=str(Path(cfg.data).resolve()), init=init, method=report.get("method"), fraction=cfg.fraction,
                 dtype=ds.meta.get("dtype"), nodata=ds.nodata, data_id=ds.identity,
                 scenes={"train": ds.scenes("train"), "val": ds.scenes("val")})  # what it was trained/selected on
    step = trainer.global_step
    last_epoch = max(0, step - 1) // max(1, int(trainer.num_training_batches))  # 0-based, last epoch run
    torch_save(model_checkpoint(net.cpu(), **meta, epoch=last_epoch, step=step, **extra), out / "model_last.pt")
    if best.is_file():
        score = next((c.best_model_score for c in trainer.checkpoint_callbacks
                      if isinstance(c, ModelCheckpoint) and c.monitor == MONITOR), None)
        epoch = _load_net(best, net)
        selection: dict[str, Any] = dict(selected_on=MONITOR, best_score=None if score is None else float(score))
    else:  # trainer.max_steps stopped training before the first validation (smoke runs)
        log.warning(f"warning: no validation pass ran before trainer.max_steps={cfg.trainer.max_steps}; "
                    "model.pt holds the last weights")
        epoch, selection = last_epoch, dict(selected_on="last (no validation pass ran)", best_score=None)
    torch_save(model_checkpoint(net, **meta, epoch=epoch, **selection, **extra), out / "model.pt")
    return last_epoch, epoch, selection["best_score"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet finetune``."""
    add_config_args(parser, "finetune_cpu, finetune_paper")
    parser.add_argument("--init", help="pretrained.pt, a pretraining run folder, or none (random init)")
    parser.add_argument("--fraction", type=float, help="labelled subset chosen by prepare: 0.01 0.05 0.1 0.2 1.0")
    parser.add_argument("--load", choices=["encoder", "encoder+aspp", "all"], help="pretrained part to load")
    parser.add_argument("--freeze", choices=FREEZE,
                        help="keep this part as loaded (no gradient, frozen BN statistics): a feature probe")


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet finetune``; returns the exit status."""
    cfg = config_from_args(FinetuneConfig, args, {k: k for k in ("data", "out", "init", "fraction", "load", "freeze")})
    path = run(cfg, resume=args.resume, overwrite=args.overwrite)
    print0(f"fine-tuned model (best {MONITOR} on the val scenes): {path}")
    return 0
