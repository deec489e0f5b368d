"""``OUT/report.html`` of an experiment grid: one self-contained page to open in a browser.

Sections: the results table (every column of ``results.csv``: each ``X_mean``/``X_std``
pair is one column, so columns added later, e.g. ``probe_*``, appear without a change
here), the Kappa plot and ``probe_curves.png`` when present, the per-class IoU of every
method side by side (mean over finished seeds, per label fraction), and for the first
:data:`~glcnet.finetune.page.PAGE_SCENES` test scenes one row image | truth | each
method's prediction (lowest fraction, first seed; from ``cells/*/eval/pred/NAME.png``)
with the class legend, then the list of cells.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from glcnet.experiment.table import CellResult, frac_label, label, order_methods
from glcnet.finetune.page import (PAGE_SCENES, document, esc, figure, file_uri, legend, markdown_inline, pct,
                                  scene_images, scene_rows, shade, table)
from glcnet.finetune.report import band_label, display_step
from glcnet.utils.atomic import write_text

IDENTITY = ("method", "label", "fraction", "n_done", "n_failed", "n_total", "cells")  # not metric columns
TOKENS = {"kappa": "Kappa", "miou": "mIoU", "oa": "OA", "f1": "F1", "iou": "IoU", "acc": "acc"}
GROUPS = {"": "test scenes", "val": "val scenes (selected epoch)", "probe": "linear probe (frozen features)"}
FIGURES = [("probe_curves.png", "Linear probe on the frozen pretrained features (probe_curves.png).")]


def column_title(metric: str) -> str:
    """``val_mean_f1`` -> ``mean F1`` (group ``val``); ``probe_miou`` -> ``mIoU`` (group ``probe``)."""
    return " ".join(TOKENS.get(t, t) for t in metric.split("_")[bool(column_group(metric)):])


def column_group(metric: str) -> str:
    """First token when it names a group of metrics (``val``, ``probe``, ...), else ``""`` (test)."""
    head = metric.split("_")[0]
    return head if "_" in metric and head not in TOKENS and head != "mean" else ""


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _num(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def results_table(path: Path) -> str:
    """``results.csv`` as an HTML table: rows grouped by fraction, a column per metric
    (``mean ± std`` in % when all its values lie in [-1, 1]), best mean per fraction in bold."""
    fields, rows = read_csv(path)
    metrics = [f[:-5] for f in fields if f.endswith("_mean") and f"{f[:-5]}_std" in fields]
    paired = {f"{m}_{s}" for m in metrics for s in ("mean", "std")}
    extra = [f for f in fields if f not in IDENTITY and f not in paired]
    order = sorted(set(column_group(m) for m in metrics), key=lambda g: (g not in GROUPS, list(GROUPS).index(g)
                                                                          if g in GROUPS else 0, g))
    metrics = [m for g in order for m in metrics if column_group(m) == g]
    percent = {m: all(abs(_num(r[f"{m}_mean"])) <= 1 for r in rows if not math.isnan(_num(r[f"{m}_mean"])))
               for m in metrics}
    head = ["method", "seeds"] + [column_title(m) + (" %" if percent[m] else "") for m in metrics] + extra
    groups = [("", 2)] + [(GROUPS.get(g, g), sum(column_group(m) == g for m in metrics)) for g in order]
    groups += [("", len(extra))] if extra else []
    out: list[list[Any]] = []
    for frac in sorted({r["fraction"] for r in rows}, key=float):
        group = [r for r in rows if r["fraction"] == frac]
        best = {m: max((_num(r[f"{m}_mean"]) for r in group), default=math.nan) for m in metrics}
        out.append(["<group>", f"{esc(frac_label(float(frac)))} of the training tiles labelled"])
        for r in group:
            n = f"{r.get('n_done', '')}/{r.get('n_total', '')}"
            if r.get("n_failed") not in (None, "", "0"):
                n += f" <span class='sd'>({esc(r['n_failed'])} failed)</span>"
            cells: list[Any] = [esc(r.get("label") or r["method"]), n]
            for m in metrics:
                mean, std = _num(r[f"{m}_mean"]), _num(r[f"{m}_std"])
                if math.isnan(mean):
                    cells.append("–")
                    continue
                scale = 100 if percent[m] else 1
                txt = f"{scale * mean:.2f}" if percent[m] else f"{mean:.4g}"
                if not math.isnan(std):
                    txt += f" <span class='sd'>± {scale * std:.2f}</span>" if percent[m] else \
                        f" <span class='sd'>± {std:.3g}</span>"
                cells.append((txt, "best" if mean == best[m] and _distinct(group, m) else ""))
            cells += [esc(r.get(f, "")) for f in extra]
            out.append(cells)
    return table(head, out, left=1, groups=groups)


def _distinct(rows: list[dict[str, str]], metric: str) -> bool:
    """More than one distinct mean in the column: only then is one of them 'best'."""
    return len({r[f"{metric}_mean"] for r in rows if r[f"{metric}_mean"]}) > 1


def _per_class(out: Path, cells: list[CellResult]) -> dict[tuple[str, float], dict[str, float]]:
    """Mean IoU per class over the finished seeds of each (method, fraction)."""
    acc: dict[tuple[str, float], dict[str, list[float]]] = {}
    for c in cells:
        path = out / c.path / "result.json"
        if c.status != "done" or not path.is_file():
            continue
        per = json.loads(path.read_text()).get("per_class") or {}
        for name, v in per.items():
            iou = v.get("iou") if isinstance(v, dict) else None
            if iou is not None and not (isinstance(iou, float) and math.isnan(iou)):
                acc.setdefault((c.method, c.fraction), {}).setdefault(name, []).append(float(iou))
    return {k: {n: sum(v) / len(v) for n, v in d.items()} for k, d in acc.items()}


def per_class_tables(out: Path, cells: list[CellResult], classes: list[str] | None) -> str:
    """One table per fraction: rows = classes, columns = methods, test IoU in %, best per row bold."""
    per = _per_class(out, cells)
    if not per:
        return "<p class='meta'>No per-class results yet.</p>"
    methods = order_methods(list(dict.fromkeys(c.method for c in cells)))
    html = []
    for frac in sorted({f for _, f in per}):
        cols = [m for m in methods if (m, frac) in per]
        names = classes or list(dict.fromkeys(n for m in cols for n in per[(m, frac)]))
        rows = []
        for name in names:
            vals = [per[(m, frac)].get(name) for m in cols]
            best = max((v for v in vals if v is not None), default=None)
            distinct = len({v for v in vals if v is not None}) > 1
            rows.append([esc(name)] + [("–", "", "") if v is None else
                                       (pct(v), "best" if v == best and distinct else "", shade(v))
                                       for v in vals])
        means = []
        for m in cols:
            vs = [per[(m, frac)][n] for n in names if n in per[(m, frac)]]
            means.append(pct(sum(vs) / len(vs)) if vs else "–")
        rows.append(["<strong>mean of the classes present</strong>"] + [f"<strong>{v}</strong>" for v in means])
        html.append(f"<h3>{esc(frac_label(frac))} of the training tiles labelled</h3><div class='card'>"
                    + table(["class"] + [label(m) + " %" for m in cols], rows) + "</div>")
    return "".join(html)


def _dataset(data: str) -> Any:
    from glcnet.data.prepared import PreparedDataset
    from glcnet.errors import GlcnetError

    try:
        return PreparedDataset(data)
    except GlcnetError:
        return None


def _image_and_truth(ds: Any, name: str) -> tuple[str, str | None]:
    """Display image and ground truth of a scene, subsampled like its ``pred/NAME.png`` before scaling."""
    from glcnet.data.raster import scale

    raw = ds.raw(name)  # [C, H, W] memory-mapped
    step = display_step(raw.shape)
    mask = ds.mask(name)
    return scene_images(scale(np.asarray(raw[:, ::step, ::step]), ds.value_range),
                        None if mask is None else np.asarray(mask[::step, ::step]), ds.colors, ds.bands)


def scenes_section(out: Path, cells: list[CellResult], data: str) -> str:
    """Rows image | truth | each method's prediction for the first test scenes (lowest fraction, first seed)."""
    done = [c for c in cells if c.status == "done"]
    if not done:
        return "<p class='meta'>No finished cells yet.</p>"
    frac, seed = min(c.fraction for c in done), min(c.seed for c in done if c.fraction == min(x.fraction for x in done))
    methods = order_methods(list(dict.fromkeys(c.method for c in cells)))
    chosen = {c.method: out / c.path for c in done if c.fraction == frac and c.seed == seed}
    ds = _dataset(data)
    if ds is not None:
        names = ds.scenes("test")
    else:  # data set moved: the predictions alone
        names = sorted({p.stem for d in chosen.values() for p in (d / "eval" / "pred").glob("*.png")})
    names = names[:PAGE_SCENES]
    if not names:
        return "<p class='meta'>No test scenes.</p>"
    colors = ds.colors if ds is not None else None
    rows = []
    for name in names:
        preds = []
        for m in methods:
            p = chosen[m] / "eval" / "pred" / f"{name}.png" if m in chosen else None
            preds.append(file_uri(p) if p is not None and p.is_file() else None)
        if ds is not None:
            rows.append((name, list(_image_and_truth(ds, name)) + preds))
        else:
            rows.append((name, preds))
    columns = [label(m) for m in methods]
    if ds is not None:
        columns = [f"image ({band_label(ds.bands)})", "ground truth"] + columns
    head = (f"<p>{len(names)} test scene{'s' if len(names) != 1 else ''} at {esc(frac_label(frac))} labels, "
            f"seed {seed}; whole-scene sliding-window predictions of each method's selected model.</p>")
    leg = legend(ds.classes, colors) if ds is not None and colors else ""
    if ds is None:
        head += f"<p class='meta'>Data set <code>{esc(data)}</code> not found: images and ground truth left out.</p>"
    return head + leg + "<div class='card'>" + scene_rows(columns, rows, classes_from=1 if ds is not None else 0) \
        + "</div>"


def cells_table(cells: list[CellResult]) -> str:
    methods = order_methods(list(dict.fromkeys(c.method for c in cells)))
    rows = []
    for c in sorted(cells, key=lambda c: (methods.index(c.method), c.fraction, c.seed)):
        kappa = pct(c.metrics.get("kappa")) if c.status == "done" else ""
        val = pct(c.val.get("kappa")) if c.status == "done" and c.val else ""
        status = esc(c.status if c.status != "failed" else f"failed: {c.error[:160]}")
        rows.append([esc(label(c.method)), esc(frac_label(c.fraction)), str(c.seed), status, kappa, val,
                     f"<a href='{esc(c.path)}/'>{esc(c.path)}</a>"])
    return table(["method", "labels", "seed", "status", "test Kappa %", "val Kappa %", "folder"], rows, left=1)


def write_page(out: str | Path, cells: list[CellResult], data: str, title: str = "", note: str = "",
               plot: Path | None = None) -> Path:
    """Write ``out/report.html`` (atomically) from ``results.csv``, the plots and the cells' folders."""
    out = Path(out)
    ds = _dataset(data)
    body = ["<h2>Results</h2>",
            "<p>Test-scene metrics, mean ± sample std over seeds; <strong>bold</strong> = best mean per "
            "column and label fraction. Each fine-tuning keeps its best epoch on the val scenes (val columns); "
            "the test scenes are used for nothing else.</p>",
            "<div class='card'>" + results_table(out / "results.csv") + "</div>"]
    figs = []
    if plot is not None and plot.is_file():
        figs.append(figure(file_uri(plot), "Test Kappa, mean ± std over seeds.", alt=plot.name))
    for name, caption in FIGURES:
        if (out / name).is_file():
            figs.append(figure(file_uri(out / name), caption, alt=name))
    if figs:
        body += ["<h2>Plots</h2>", "<div class='figs'>" + "".join(figs) + "</div>"]
    body += ["<h2>Per-class IoU</h2>", "<p>Test IoU per class in %, mean over finished seeds; "
             "<strong>bold</strong> = best method per class.</p>",
             per_class_tables(out, cells, ds.classes if ds is not None else None)]
    body += ["<h2>Test scenes</h2>", scenes_section(out, cells, data)]
    n = {s: sum(c.status == s for c in cells) for s in ("done", "failed", "pending")}
    body += [f"<h2>Cells</h2><details {'open' if n['failed'] else ''}><summary>{len(cells)} cells: {n['done']} "
             f"done, {n['failed']} failed, {n['pending']} pending</summary><div class='card'>{cells_table(cells)}"
             "</div></details>"]
    meta = f"data <code>{esc(data)}</code>" + (f" ({esc(ds.name)})" if ds is not None else "")
    path = out / "report.html"
    default = "Experiment results" + (f": {ds.name}" if ds is not None else "")
    write_text(path, document(title or default, "\n".join(body), meta=meta,
                              note=markdown_inline(note) if note else ""))
    return path
