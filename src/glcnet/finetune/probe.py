"""Dense linear probe of frozen DeepLabv3+ features: what pretraining has learned, on labels.

For each feature layer ``L`` (``aspp``: ``[B, A, H/16, W/16]``, ``decoder``: ``[B, D, H/4, W/4]``)
of a frozen network (eval mode, no gradient), a per-pixel linear classifier is fitted on
the labelled train tiles of one label fraction and scored on the whole *val* scenes
(one pooled confusion matrix: mIoU, Kappa, OA; :mod:`glcnet.finetune.metrics`).

Before that, a copy of the network gets its batch-norm statistics recomputed on the same
``bn_tiles`` train/unlabelled tiles, whatever the network (:mod:`glcnet.models.batchnorm`):
otherwise a pretrained network would be read with the statistics of its augmented views and
a random one with none (running statistics 0 and 1), which confounds the comparison.

Features of pixel ``p``: ``f(p)``, the layer's map bilinearly upsampled to the input
resolution (``align_corners=False``) at ``p``'s centre, standardised as
``z = (f - mu) / sigma`` with the per-channel mean/std of the training pixels.
Classifier: multinomial logistic regression ``logits = W z + b`` minimising::

    J(W, b) = 1/N sum_i CE(W z_i + b, y_i) + l2/2 ||W||^2

over ``N`` labelled training pixels (at most ``pixels``, drawn uniformly from the labelled
pixels of the tiles with a fixed generator), by L-BFGS with a strong-Wolfe line search.
Why this solver: ``J`` is strictly convex, so L-BFGS reaches the same optimum from any
start and needs no learning rate or epochs to tune (SGD probes do); on cached features it
costs ``max_iter`` products of ``[N, D] x [D, K]``: about a second for N = 65k, D = 256 on
a CPU. A closed-form ridge regression on one-hot targets is faster still but is a worse
classifier for imbalanced or multi-class pixels (least squares on indicators), and the
probe is there to measure features, not to be cheap at any price.

Upsampling is linear, so classifying the upsampled features equals upsampling the
logits of the low-resolution map; the val scenes are predicted that way, window by
window (side ``window``, by default the tile side, so that the features see the context
they were fitted on; stride ``window``, the last window aligned to the border, scenes
smaller than a window reflect-padded), one feature pass per window for all layers.
The probe never touches the network's weights, its batch-norm statistics (it recalibrates a
copy) or any global random generator, so probing during pretraining does not change what is trained.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from glcnet.config import ProbeConfig
from glcnet.data.splits import window_starts
from glcnet.errors import GlcnetError
from glcnet.finetune.metrics import compute_metrics, confusion_matrix
from glcnet.models.batchnorm import recalibrated
from glcnet.utils import signals
from glcnet.utils.progress import log

if TYPE_CHECKING:
    from glcnet.models import DeepLab

LAYERS = ("aspp", "decoder")


@dataclass
class LinearProbe:
    """``logits = ((f - mean) / std) @ weight.T + bias`` for features ``f [..., D]``."""

    mean: torch.Tensor  # [D]
    std: torch.Tensor  # [D]
    weight: torch.Tensor  # [K, D]
    bias: torch.Tensor  # [K]

    def logits_map(self, feat: torch.Tensor) -> torch.Tensor:
        """``feat [B, D, h, w]`` -> ``[B, K, h, w]``."""
        z = (feat.float() - self.mean[:, None, None]) / self.std[:, None, None]
        return torch.einsum("bdhw,kd->bkhw", z, self.weight) + self.bias[:, None, None]


def fit_linear_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float = 1e-4,
                     max_iter: int = 200) -> LinearProbe:
    """Fit the multinomial logistic regression of the module doc on ``feats [N, D]``, ``labels [N]``."""
    if feats.ndim != 2 or labels.shape != feats.shape[:1] or feats.shape[0] == 0:
        raise GlcnetError(f"probe: need features [N, D] and labels [N] with N > 0, got {list(feats.shape)}, "
                          f"{list(labels.shape)}")
    x = feats.float()
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp(min=1e-6)
    z = (x - mean) / std  # [N, D]
    y = labels.long()
    w = torch.zeros(num_classes, z.shape[1], device=z.device, requires_grad=True)
    b = torch.zeros(num_classes, device=z.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                            tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(mean, std, w.detach(), b.detach())


def _pixel_points(mask: torch.Tensor, count: int, ignore_index: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` random labelled pixels of ``mask [H, W]``: ``(rows, cols)`` int64 [n] each."""
    idx = (mask.reshape(-1) != ignore_index).nonzero()[:, 0]  # [M]
    if idx.numel() > count:
        idx = idx[torch.randperm(idx.numel(), generator=generator)[:count]]
    w = mask.shape[1]
    return idx // w, idx % w


def sample_features(feat: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, height: int,
                    width: int) -> torch.Tensor:
    """Features of ``feat [D, h, w]`` upsampled to ``height x width`` at pixel centres -> ``[n, D]``.

    Equal to ``F.interpolate(feat, (height, width), mode="bilinear", align_corners=False)[:, rows, cols]``
    without building the full-resolution map.
    """
    gx = (2 * cols.to(feat.device, torch.float32) + 1) / width - 1  # normalised x of pixel centres
    gy = (2 * rows.to(feat.device, torch.float32) + 1) / height - 1
    grid = torch.stack([gx, gy], -1)[None, None]  # [1, 1, n, 2]
    out = F.grid_sample(feat[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T  # [n, D]


def _features(net: DeepLab, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    feats = net.features(x)
    return {k: feats[k] for k in layers}


def _pad_to(image: torch.Tensor, window: int) -> torch.Tensor:
    """Reflect-pad ``[C, H, W]`` so both sides are at least ``window`` (edge-pad 1-px scenes)."""
    _, h, w = image.shape
    ph, pw = max(0, window - h), max(0, window - w)
    if not ph and not pw:
        return image
    mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
    return F.pad(image[None], (0, pw, 0, ph), mode=mode)[0]


class ProbeStopped(Exception):
    """A stop was asked for (a signal) while probing: the probe gives up at once, so that
    training reaches its safe point (the checkpoint at the end of the step) within the grace period."""


class DenseProbe:
    """Linear probes of a prepared data set's labelled train tiles (one fraction), scored on val scenes.

    ``DenseProbe(ds, fraction)(net)`` -> ``{layer: {"miou", "kappa", "oa", "mean_f1", ...}, "seconds": s}``.
    The tiles and val scenes are read once, at construction (they are small: the labelled
    fraction and the val split); each call costs one feature pass over them and one fit per layer.
    """

    def __init__(self, ds: Any, fraction: float = 0.01, layers: Sequence[str] = LAYERS, pixels: int = 65536,
                 window: int = 0, batch_size: int = 16, l2: float = 1e-4, max_iter: int = 100, seed: int = 0,
                 subset_seed: int = -1, bn_tiles: int = 256, subset: str = ""):
        from glcnet.data.prepared import SceneDataset, TileDataset, sample_tiles

        bad = [layer for layer in layers if layer not in LAYERS]
        if bad or not layers:
            raise GlcnetError(f"probe.layers: expected some of {', '.join(LAYERS)}, got {list(layers)}")
        if window < 0 or window % 16:
            raise GlcnetError(f"probe.window: must be 0 (the tile size) or a positive multiple of 16, got {window}")
        if pixels < 1 or max_iter < 1 or batch_size < 1:
            raise GlcnetError("probe: pixels, max_iter and batch_size must be >= 1")
        self.layers, self.batch_size = tuple(layers), batch_size
        self.l2, self.max_iter = l2, max_iter
        self.num_classes, self.ignore_index, self.classes = ds.num_classes, ds.ignore_index, ds.classes
        tiles = TileDataset(ds, splits=("train",), fraction=fraction, with_mask=True, subset_seed=subset_seed,
                            subset=subset or None)
        self.fraction = fraction
        self.tiles = [tiles[i] for i in range(len(tiles))]  # {"image" [C, h, w], "mask" [h, w]}
        scenes = SceneDataset(ds, "val")
        self.scenes = [scenes[i] for i in range(len(scenes))]
        self.scenes = [s for s in self.scenes if "mask" in s]
        if not self.scenes:
            raise GlcnetError(f"{ds.root}: no labelled val scenes to score the probe on")
        for t in self.tiles:
            if t["image"].shape[-1] % 16 or t["image"].shape[-2] % 16:
                raise GlcnetError(f"{ds.root}: probe tiles must have sides that are multiples of 16, "
                                  f"got {list(t['image'].shape[-2:])} (prepare with --tile-size 16k)")
        # windows as large as the tiles the probe is fitted on: the features see the same context
        self.window = window or min(min(t["image"].shape[-2:]) for t in self.tiles)
        # the same training pixels for every call: fixed generator, drawn once
        g = torch.Generator().manual_seed(seed)
        per_tile = max(1, math.ceil(pixels / len(self.tiles)))
        self.points = [_pixel_points(t["mask"], per_tile, self.ignore_index, g) for t in self.tiles]
        if sum(r.numel() for r, _ in self.points) == 0:
            raise GlcnetError(f"{ds.root}: the labelled tiles of fraction {fraction:g} have no labelled pixel")
        # batch-norm recalibration: the same tiles for every network probed
        self.bn_tiles = sample_tiles(ds, ("train", "unlabeled"), bn_tiles, seed) if bn_tiles > 0 else None

    @classmethod
    def from_config(cls, ds: Any, cfg: ProbeConfig) -> DenseProbe:
        return cls(ds, cfg.fraction, layers=cfg.layers, pixels=cfg.pixels, window=cfg.window,
                   batch_size=cfg.batch_size, l2=cfg.l2, max_iter=cfg.max_iter, subset_seed=cfg.subset_seed,
                   bn_tiles=cfg.bn_tiles, subset=cfg.subset)

    @staticmethod
    def unavailable(ds: Any, fraction: float) -> str | None:
        """Why ``ds`` cannot be probed at ``fraction`` (no such labelled subset, no labelled val scene), or None."""
        if not any(abs(f - fraction) < 1e-9 for f in ds.fractions):
            have = ", ".join(f"{f:g}" for f in sorted(ds.fractions)) or "none"
            return f"no labelled subset {fraction:g} (has: {have})"
        if not any(ds.scene_info(n).get("has_mask", True) for n in ds.scenes("val")):
            return "no labelled val scenes"
        return None

    @torch.no_grad()
    def fit(self, net: DeepLab, stop: Callable[[], bool] = lambda: False) -> dict[str, LinearProbe]:
        dev = next(net.parameters()).device
        feats: dict[str, list[torch.Tensor]] = {k: [] for k in self.layers}
        labels: list[torch.Tensor] = []
        for i in range(0, len(self.tiles), self.batch_size):
            if stop():
                raise ProbeStopped
            chunk = self.tiles[i:i + self.batch_size]
            maps = _features(net, torch.stack([t["image"] for t in chunk]).to(dev), self.layers)
            for j, t in enumerate(chunk):  # features at the sampled pixels: [n, D] per layer
                rows, cols = self.points[i + j]
                h, w = t["mask"].shape
                for k in self.layers:
                    feats[k].append(sample_features(maps[k][j], rows, cols, h, w))
                labels.append(t["mask"][rows, cols])
        y = torch.cat(labels).to(dev)
        return {k: fit_linear_probe(torch.cat(v), y, self.num_classes, self.l2, self.max_iter)
                for k, v in feats.items()}

    @torch.no_grad()
    def predict_scene(self, net: DeepLab, probes: dict[str, LinearProbe], image: torch.Tensor,
                      stop: Callable[[], bool] = lambda: False) -> dict[str, torch.Tensor]:
        """Class maps ``{layer: [H, W] int64}`` of one scaled scene ``[C, H, W]`` (module doc)."""
        dev = next(net.parameters()).device
        _, h, w = image.shape
        win = self.window
        x = _pad_to(image, win)
        hp, wp = x.shape[-2:]
        out = {k: torch.empty(hp, wp, dtype=torch.int64) for k in probes}
        origins = [(y, xx) for y in window_starts(hp, win, win) for xx in window_starts(wp, win, win)]
        for i in range(0, len(origins), self.batch_size):
            if stop():
                raise ProbeStopped
            chunk = origins[i:i + self.batch_size]
            batch = torch.stack([x[:, y:y + win, xx:xx + win] for y, xx in chunk]).to(dev)  # [B, C, win, win]
            maps = _features(net, batch, list(probes))
            for k, probe in probes.items():
                logits = F.interpolate(probe.logits_map(maps[k]), size=(win, win), mode="bilinear",
                                       align_corners=False)  # [B, K, win, win]
                cls = logits.argmax(1).cpu()
                for (y, xx), c in zip(chunk, cls):
                    out[k][y:y + win, xx:xx + win] = c
        return {k: v[:h, :w] for k, v in out.items()}

    def __call__(self, net: DeepLab, stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Fit and score the probes of ``net``'s frozen features (of a recalibrated copy, with
        ``bn_tiles``); the network's mode is restored. ``stop`` is asked between batches: when
        true, :class:`ProbeStopped` is raised."""
        t0 = time.perf_counter()
        was_training = net.training
        original = net
        if self.bn_tiles is not None:
            net = recalibrated(net, self.bn_tiles, self.batch_size)
        net.eval()
        try:
            probes = self.fit(net, stop)
            cms = {k: torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64) for k in probes}
            for s in self.scenes:
                for k, pred in self.predict_scene(net, probes, s["image"], stop).items():
                    cms[k] += confusion_matrix(pred, s["mask"], self.num_classes, self.ignore_index)
        finally:
            original.train(was_training)
        out: dict[str, Any] = {}
        for k, cm in cms.items():
            m = compute_metrics(cm, self.classes)
            out[k] = {key: m[key] for key in ("miou", "kappa", "oa", "mean_f1")}
            out[k]["per_class_iou"] = {c: v["iou"] for c, v in m["per_class"].items()}
        out["seconds"] = time.perf_counter() - t0
        return out


def flat_metrics(result: dict[str, Any], prefix: str = "probe/") -> dict[str, float]:
    """``{"probe/decoder_miou": .., "probe/decoder_kappa": .., ...}`` of a :class:`DenseProbe` result."""
    return {f"{prefix}{layer}_{k}": float(v) for layer, m in result.items() if isinstance(m, dict)
            for k, v in m.items() if k in ("miou", "kappa", "oa")}


def summary_line(result: dict[str, Any], label: str = "probe") -> str:
    """``probe step 300: decoder mIoU 45.0 Kappa 14.7 | aspp mIoU 38.7 Kappa 4.6 (6.1 s)``."""
    parts = [f"{k} mIoU {100 * m['miou']:.1f} Kappa {100 * m['kappa']:.1f}"
             for k, m in sorted(result.items(), reverse=True) if isinstance(m, dict) and "miou" in m]
    return f"{label}: {' | '.join(parts)} ({result['seconds']:.1f} s)"


class ProbeCallback(Callback):
    """Run a :class:`DenseProbe` on ``pl_module.method.net`` during pretraining (rank 0 only).

    At step 0 (the random initialisation: the baseline line), every ``every`` optimizer
    steps and at the end. ``every = -1`` (auto): about 10 points per run, and the interval
    doubles whenever the probes have cost more than ``budget`` (10%) of the training time
    so far. Results go to every logger (``metrics.jsonl``: ``probe/<layer>_<miou|kappa|oa>``,
    ``probe/seconds``), to the progress bar and as one line of the ``glcnet`` logger.
    """

    def __init__(self, probe: DenseProbe, every: int = -1, budget: float = 0.1):
        self.probe, self.every, self.auto, self.budget = probe, every, every < 0, budget
        self.last_step = -1
        self.probe_seconds = 0.0
        self._t0 = 0.0
        self._bar: dict[str, float] = {}

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.auto:
            self.every = max(1, int(trainer.estimated_stepping_batches) // 10)
        self._t0 = time.perf_counter()

    def _run(self, trainer: Any, pl_module: Any) -> None:
        step = trainer.global_step
        self.last_step = step
        if not trainer.is_global_zero:
            return
        try:  # a signal (glcnet.utils.signals) ends the probe, not the step's checkpoint
            result = self.probe(pl_module.method.net, stop=lambda: bool(signals.requested()))
        except ProbeStopped:
            log.info(f"probe step {step}: stopped by a signal")
            return
        self.probe_seconds += result["seconds"]
        metrics = {**flat_metrics(result), "probe/seconds": result["seconds"]}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        layer = "decoder" if "decoder" in result else next(iter(k for k in result if k != "seconds"))
        self._bar = {"probe_miou": result[layer]["miou"]}
        log.info(summary_line(result, f"probe step {step}"))
        trained = time.perf_counter() - self._t0 - self.probe_seconds
        if self.auto and step > 0 and self.probe_seconds > self.budget * max(trained, 1e-9):
            self.every *= 2  # keep probing under ~budget of the run

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 0 and self.last_step < 0:
            self._run(trainer, pl_module)  # random initialisation

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step != self.last_step and step % self.every == 0:
            self._run(trainer, pl_module)
        if self._bar:
            pl_module.log_dict(self._bar, prog_bar=True, logger=False, on_step=True, on_epoch=False)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_step != self.last_step:
            self._run(trainer, pl_module)
        if trainer.is_global_zero and self.probe_seconds > 0:
            total = time.perf_counter() - self._t0
            log.info(f"probe: {self.probe_seconds:.0f} s of {total:.0f} s ({100 * self.probe_seconds / total:.1f}%)")
