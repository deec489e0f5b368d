"""Evaluation report files: ``metrics.json``, ``metrics.md``, ``confusion.png``, and per scene
``NAME.png`` (figure) and ``pred/NAME.png`` (class map).

Scene figures are image | ground truth | prediction side by side with titles and the
class legend, in the data set's class colours (ignore = black), downsampled so each
panel's longer side is at most 1024 px. The image shows the R, G, B bands when the data
set has them (else the first three), each stretched between its 2nd and 98th percentile.
``pred/NAME.png`` is the predicted class map at the same size, a palette PNG whose pixel
values are the class indices (the palette holds the class colours), so both an image
viewer and ``np.asarray(PIL.Image.open(p))`` read it; the HTML report is built from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glcnet.finetune.metrics import json_safe
from glcnet.utils.atomic import write_json, write_text

PANEL_SIDE = 1024


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


def display_step(shape: Sequence[int], side: int = PANEL_SIDE) -> int:
    """Subsampling step that brings the longer side of ``shape`` (``[..., H, W]``) to at most ``side``."""
    return max(1, math.ceil(max(shape[-2:]) / side))


def band_label(bands: Sequence[str]) -> str:
    """The bands :func:`display_rgb` shows, e.g. ``R, G, B`` or ``NIR, R, G``."""
    idx = [bands.index(b) for b in "RGB"] if all(b in bands for b in "RGB") else [0, 1, 2]
    return ", ".join(bands[min(i, len(bands) - 1)] for i in idx)


def class_map_png(classes: np.ndarray, colors: list[list[int]], path: Path) -> None:
    """Save ``[H, W]`` class indices as a palette PNG (pixel = class index, palette = class colours, 255 black)."""
    from PIL import Image

    img = Image.fromarray(classes.astype(np.uint8), mode="P")
    img.putpalette(colorize(np.arange(256, dtype=np.uint8), colors).reshape(-1).tolist())
    img.save(path, format="PNG", optimize=True)


def legend_handles(classes: Sequence[str], colors: list[list[int]], ignore: bool = True) -> list[Any]:
    """Matplotlib legend patches of the class colours (and black = ignore)."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=(c[0] / 255, c[1] / 255, c[2] / 255), edgecolor="0.4", label=n)
               for n, c in zip(classes, colors)]
    if ignore:
        handles.append(Patch(facecolor="black", edgecolor="0.4", label="ignore / no label"))
    return handles


def scene_figure(image: np.ndarray, mask: np.ndarray, pred: np.ndarray, classes: Sequence[str],
                 colors: list[list[int]], bands: Sequence[str], path: Path, title: str = "") -> None:
    """Save image | ground truth | prediction with panel titles and the class legend (PNG).

    ``image`` ``[C, H, W]`` scaled, ``mask`` and ``pred`` ``[H, W]`` class indices (255 = ignore);
    all three are subsampled to at most :data:`PANEL_SIDE` px on their longer side.
    """
    from matplotlib.figure import Figure

    step = display_step(mask.shape)
    panels = [(f"image ({band_label(bands)})", display_rgb(image[:, ::step, ::step], bands)),
              ("ground truth", colorize(np.asarray(mask[::step, ::step], dtype=np.uint8), colors)),
              ("prediction", colorize(np.asarray(pred[::step, ::step], dtype=np.uint8), colors))]
    h, w = panels[0][1].shape[:2]
    dpi = 110
    panel_in = max(3.6, max(h, w) / dpi)  # inches of a panel's longer side: about one figure pixel per panel pixel
    fig = Figure(figsize=(3 * panel_in * w / max(h, w) + 0.4, panel_in * h / max(h, w) + 1.3), dpi=dpi,
                 layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (name, rgb) in zip(axes, panels):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    fig.legend(handles=legend_handles(classes, colors), loc="outside lower center",
               ncol=min(len(classes) + 1, 7), fontsize=8, frameon=False)
    fig.savefig(path, format="png")


def confusion_png(cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (recall per true class) with pixel counts (Agg, no pyplot)."""
    from matplotlib.figure import Figure

    counts = np.asarray(cm, dtype=np.float64)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
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
            if counts[i, j]:
                ax.text(j, i, f"{rows[i, j]:.2f}\n{int(counts[i, j])}", ha="center", va="center", fontsize=7,
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
