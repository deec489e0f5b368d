"""Evaluation report files: ``metrics.json``, ``metrics.md``, ``confusion.png``, ``NAME.png`` per scene.

Scene pictures are image | ground truth | prediction side by side, in the data set's class
colours (ignore = black), downsampled so each panel's longer side is at most 1024 px.
The image shows the R, G, B bands when the data set has them (else the first three),
each stretched between its 2nd and 98th percentile.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from glcnet.finetune.metrics import json_safe
from glcnet.utils.atomic import write_json, write_text

PANEL_SIDE = 1024
GAP = 8  # white pixels between panels


def colorize(classes: np.ndarray, colors: list[list[int]]) -> np.ndarray:
    """``[H, W]`` uint8 class indices -> ``[H, W, 3]`` uint8 colours (255 = ignore -> black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = np.asarray(colors, np.uint8)
    return lut[classes]


def display_rgb(image: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """Scaled image ``[C, H, W]`` -> ``[H, W, 3]`` uint8 with a 2-98 percentile stretch per band."""
    idx = [bands.index(b) for b in "RGB"] if all(b in bands for b in "RGB") else [0, 1, 2]
    idx = [min(i, image.shape[0] - 1) for i in idx]  # single-band scenes: grey
    rgb = np.asarray(image[idx], dtype=np.float32)  # [3, H, W]
    lo, hi = np.percentile(rgb.reshape(3, -1), [2, 98], axis=1)  # [3], [3]
    rgb = (rgb - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None]
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def scene_panel(image: np.ndarray, mask: np.ndarray, pred: np.ndarray, colors: list[list[int]],
                bands: Sequence[str]) -> np.ndarray:
    """``[h, 3w + 2 GAP, 3]`` uint8: image | ground truth | prediction, downsampled by one step."""
    step = max(1, math.ceil(max(mask.shape) / PANEL_SIDE))
    image, mask, pred = image[:, ::step, ::step], mask[::step, ::step], pred[::step, ::step]
    gap = np.full((mask.shape[0], GAP, 3), 255, np.uint8)
    parts = [display_rgb(image, bands), gap, colorize(mask.astype(np.uint8), colors), gap,
             colorize(pred.astype(np.uint8), colors)]
    return np.concatenate(parts, 1)


def save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG")


def confusion_png(cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (recall per true class) with pixel counts (Agg, no pyplot)."""
    from matplotlib.figure import Figure

    cm = np.asarray(cm, dtype=np.float64)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(classes)
    fig = Figure(figsize=(1.2 + 0.75 * k, 1.0 + 0.7 * k), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title or "confusion (rows normalised; counts)")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, f"{rows[i, j]:.2f}\n{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def metrics_markdown(m: dict[str, Any], title: str) -> str:
    """Markdown: summary row (OA, Kappa, mIoU, mean F1, in %) and per-class IoU/P/R/F1."""
    lines = [f"## {title}", "", "| OA | Kappa | mIoU | mean F1 | pixels |", "| --- | --- | --- | --- | --- |",
             f"| {_fmt(m['oa'])} | {_fmt(m['kappa'])} | {_fmt(m['miou'])} | {_fmt(m['mean_f1'])} | {m['pixels']} |",
             "", "| class | IoU | precision | recall | F1 | support (px) |", "| --- | --- | --- | --- | --- | --- |"]
    for name, c in m["per_class"].items():
        lines.append(f"| {name} | {_fmt(c['iou'])} | {_fmt(c['precision'])} | {_fmt(c['recall'])} | "
                     f"{_fmt(c['f1'])} | {c['support']} |")
    notes = ["", "Values in %. `-`: class absent from ground truth and prediction (left out of the means)."]
    if m.get("excluded_from_means"):
        notes.append(f"Left out of the means: {', '.join(m['excluded_from_means'])}.")
    return "\n".join(lines + notes) + "\n"


def write_report(folder: Path, metrics: dict[str, Any], classes: Sequence[str]) -> None:
    """``metrics.json`` (NaN -> null), ``metrics.md`` and ``confusion.png`` (+ ISPRS variants)."""
    write_json(folder / "metrics.json", json_safe(metrics))
    head = f"# Evaluation: {metrics.get('split', '')} split, {len(metrics.get('scenes', {}))} scenes\n\n"
    md = head + metrics_markdown(metrics, "All labelled pixels")
    confusion_png(metrics["confusion"], classes, folder / "confusion.png")
    if metrics.get("isprs"):
        md += "\n" + metrics_markdown(metrics["isprs"], "ISPRS convention (eroded boundaries, clutter excluded)")
        confusion_png(metrics["isprs"]["confusion"], classes, folder / "confusion_isprs.png",
                      "ISPRS convention (rows normalised; counts)")
    write_text(folder / "metrics.md", md)
