"""Lightning module of fine-tuning: cross entropy on labelled tiles, whole-scene validation.

Training minimises ``CE(logits, mask)`` with the data set's ignore index (255) and
optional class weights. Validation runs the sliding window (:mod:`glcnet.finetune.sliding`)
over each whole *validation* scene (never the test scenes) and pools one confusion
matrix (torchmetrics, summed over DDP ranks, each scene on one rank: ``finetune.train.RankShard``);
at the end of the pass it logs
``val_miou``, ``val_kappa``, ``val_oa`` and ``val_mean_f1`` (:mod:`glcnet.finetune.metrics`).
Model selection (``best.ckpt``) maximises ``val_miou``. Parameters under the ``frozen``
prefixes get no gradient and their batch-norm layers keep their statistics (eval mode
even while training), so a frozen part is exactly the loaded one. Parameters under the
``slow`` prefixes (the loaded, pretrained parts) learn at ``slow_mult x lr``, the others at
``lr`` (discriminative fine-tuning: a few labels then move the pretrained features less). For
the first ``warmup`` optimizer steps the ``slow`` group's rate is 0 (only the new layers learn;
its batch norms still adapt): a function of the global step, so ``--resume`` and DDP agree.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torchmetrics.classification import MulticlassConfusionMatrix

from glcnet.config import EvalConfig, OptimConfig
from glcnet.engine import configure_optim
from glcnet.finetune.metrics import compute_metrics
from glcnet.finetune.sliding import sliding_classes
from glcnet.models import DeepLab

MONITOR = "val_miou"


class SegmentationTask(L.LightningModule):
    """Fine-tuning of ``net`` (module doc): cross entropy, whole-scene validation, frozen parts."""

    class_weights: torch.Tensor | None  # [K] buffer

    def __init__(self, net: DeepLab, optim: OptimConfig, eval_cfg: EvalConfig, ignore_index: int = 255,
                 class_weights: torch.Tensor | None = None, frozen: tuple[str, ...] = (), lr: float | None = None,
                 slow: tuple[str, ...] = (), slow_mult: float = 1.0, warmup: int = 0):
        super().__init__()
        self.net, self.optim, self.eval_cfg, self.ignore_index = net, optim, eval_cfg, ignore_index
        self.lr = optim.lr if lr is None else lr  # for the global batch (glcnet.engine.scaled_lr)
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.val_cm = MulticlassConfusionMatrix(net.num_classes, ignore_index=ignore_index)
        self.frozen = frozen  # parameter-name prefixes of self.net
        self.slow, self.slow_mult = slow, slow_mult  # prefixes learning at slow_mult x lr
        self.warmup = warmup if slow else 0  # steps at rate 0 for the slow group (group 1)
        for name, p in net.named_parameters():
            if name.startswith(frozen):
                p.requires_grad_(False)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.frozen:  # Lightning puts the whole module in train mode around validation passes
            for name, m in self.net.named_modules():
                if (name + ".").startswith(self.frozen):
                    m.eval()  # frozen batch-norm statistics
        if self.warmup:  # the slow group learns at 0 during the warm-up, then at its scheduled rate
            sched = self.lr_schedulers()
            group = self.optimizers().optimizer.param_groups[1]  # type: ignore[union-attr]
            group["lr"] = 0.0 if self.global_step < self.warmup else sched.get_last_lr()[1]  # type: ignore[union-attr]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.net.predict_logits(batch["image"])  # [B, K, h, w]
        loss = F.cross_entropy(logits, batch["mask"], weight=self.class_weights, ignore_index=self.ignore_index)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(logits), sync_dist=True)
        return loss

    def validation_step(self, scene: dict[str, Any], batch_idx: int) -> None:
        e = self.eval_cfg
        pred = sliding_classes(self.net.predict_logits, scene["image"], window=e.window, stride=e.stride,
                               batch_size=e.batch_size, blend=e.blend, tta=e.tta, device=self.device)  # [H, W]
        self.val_cm.update(pred, scene["mask"].to(self.device))

    def on_validation_epoch_end(self) -> None:
        m = compute_metrics(self.val_cm.compute())  # summed over ranks: the same value on every rank
        self.val_cm.reset()
        for key in ("miou", "kappa", "oa", "mean_f1"):
            self.log(f"val_{key}", float(m[key]), prog_bar=key in ("miou", "kappa"), sync_dist=False)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        if not self.slow or (self.slow_mult == 1.0 and not self.warmup):  # one group (earlier checkpoints resume)
            return configure_optim(self.net.parameters(), self.optim, lr=self.lr)
        named = list(self.net.named_parameters())
        fast = [p for n, p in named if not n.startswith(self.slow)]
        slow = [p for n, p in named if n.startswith(self.slow)]
        groups: list[dict[str, Any]] = [{"params": fast}, {"params": slow, "lr_mult": self.slow_mult}]
        return configure_optim(groups, self.optim, lr=self.lr)


def first(batch: list[Any]) -> Any:
    """Collate of batch size 1 for whole scenes of different sizes."""
    return batch[0]
