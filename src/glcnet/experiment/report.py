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

from glcnet.experiment.table import LABELS, CellResult, frac_label, label, order_methods
from glcnet.finetune.page import (
    PAGE_SCENES,
    document,
    esc,
    figure,
    file_uri,
    legend,
    markdown_inline,
    pct,
    scene_images,
    scene_rows,
    shade,
    table,
)
from glcnet.finetune.report import band_label, display_step
from glcnet.utils.atomic import write_text

IDENTITY = ("method", "label", "fraction", "n_done", "n_failed", "n_total", "cells")  # not metric columns
TOKENS = {"kappa": "Kappa", "miou": "mIoU", "oa": "OA", "f1": "F1", "iou": "IoU", "acc": "acc",
          "dkappa": "Δ Kappa", "aspp": "ASPP"}
GROUPS = {  # first token of a column name -> its table (columns without one are test metrics)
    "": ("Test scenes", "mean ± sample std over seeds"),
    "val": ("Val scenes, selected epoch", "the model-selection metrics: choose a sweep's setting on these"),
    "probe": ("Frozen-feature linear probe, val scenes",
              "a linear classifier per pixel fitted on the frozen features the fine-tuning starts from"),
    "dkappa": ("Paired test Kappa differences",
               "mean over seeds of (method − baseline) for the same seed, with its 95% Student-t interval"),
}
FIGURES = [("probe_curves.png", ("Frozen-feature probe mIoU on the val scenes against the pretraining step, "
                                 "per method (the left end is the random initialisation)."))]


def column_group(name: str) -> str:
    """``val_kappa`` -> ``val``; ``probe_decoder_miou`` -> ``probe``; ``dkappa_vs_none`` -> ``dkappa``;
    ``kappa``, ``mean_f1`` -> ``""`` (test)."""
    head = name.split("_")[0]
    return head if "_" in name and head not in ("kappa", "miou", "oa", "mean", "f1") else ""


def column_title(name: str) -> str:
    """``val_mean_f1`` -> ``mean F1``; ``probe_decoder_miou`` -> ``decoder mIoU``; ``dkappa_vs_none`` ->
    ``vs Random init``."""
    tokens = name.split("_")[1:] if column_group(name) else name.split("_")
    return " ".join(TOKENS.get(t, LABELS.get(t, t)) for t in tokens)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Column names and rows of a CSV file."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _num(x: str | None) -> float:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


class _Column:
    """One shown column: ``NAME_mean`` with ``NAME_std`` (a spread) or ``NAME_low``/``NAME_high`` (an
    interval), or a plain column; values in % when every value lies in [-1, 1]."""

    def __init__(self, name: str, kind: str, rows: list[dict[str, str]]):
        self.name, self.kind = name, kind
        key = f"{name}_mean" if kind != "plain" else name
        values = [v for r in rows if not math.isnan(v := _num(r.get(key)))]
        self.key, self.empty = key, not values and all(not r.get(key) for r in rows)
        self.percent = bool(values) and all(abs(v) <= 1 for v in values)

    def title(self) -> str:
        return column_title(self.name) + (" %" if self.percent else "")

    def _fmt(self, v: float, sign: bool = False) -> str:
        if self.percent:
            return f"{100 * v:+.2f}" if sign else f"{100 * v:.2f}"
        return f"{v:+.4g}" if sign else f"{v:.4g}"

    def cell(self, r: dict[str, str], best: float, distinct: bool) -> Any:
        if self.kind == "plain":
            return esc(r.get(self.name, ""))
        mean = _num(r.get(self.key))
        if math.isnan(mean):
            return "–"
        if self.kind == "interval":
            if self.name.endswith(f"_vs_{r.get('method')}"):
                return ""  # a method against itself
            low, high, n = _num(r.get(f"{self.name}_low")), _num(r.get(f"{self.name}_high")), r.get(f"{self.name}_n")
            txt = self._fmt(mean, sign=True)
            if not math.isnan(low) and not math.isnan(high):
                return f"{txt} <span class='sd'>[{self._fmt(low, True)}, {self._fmt(high, True)}]</span>"
            return txt + (f" <span class='sd'>(n={esc(n)})</span>" if n else "")
        std = _num(r.get(f"{self.name}_std"))
        txt = self._fmt(mean) + ("" if math.isnan(std) else f" <span class='sd'>± {self._fmt(std)}</span>")
        return (txt, "best" if mean == best and distinct else "")


def results_tables(path: Path) -> str:
    """``results.csv`` as HTML: one table per column group (test, val, probe, paired differences,
    any group added later), rows grouped by label fraction, best mean per fraction in bold;
    columns without any value are left out."""
    fields, rows = read_csv(path)
    cols: list[_Column] = []
    used = set(IDENTITY)
    for f in fields:
        base = f.removesuffix("_mean")
        if f.endswith("_mean") and f"{base}_std" in fields:
            cols.append(_Column(base, "spread", rows))
            used |= {f, f"{base}_std"}
        elif f.endswith("_mean") and f"{base}_low" in fields and f"{base}_high" in fields:
            cols.append(_Column(base, "interval", rows))
            used |= {f, f"{base}_low", f"{base}_high", f"{base}_n"}
    cols += [_Column(f, "plain", rows) for f in fields if f not in used]
    cols = [c for c in cols if not c.empty]
    groups = list(dict.fromkeys(column_group(c.name) for c in cols))
    groups.sort(key=lambda g: list(GROUPS).index(g) if g in GROUPS else len(GROUPS))
    fractions = sorted({r["fraction"] for r in rows}, key=float)
    html = []
    for g in groups:
        shown = [c for c in cols if column_group(c.name) == g]
        out: list[list[Any]] = []
        for frac in fractions:
            block = [r for r in rows if r["fraction"] == frac]
            out.append(["<group>", f"{esc(frac_label(float(frac)))} of the training tiles labelled"])
            best = {c.name: max((_num(r.get(c.key)) for r in block), default=math.nan) for c in shown}
            distinct = {c.name: len({r.get(c.key) for r in block if r.get(c.key)}) > 1 for c in shown}
            for r in block:
                n = f"{r.get('n_done', '')}/{r.get('n_total', '')}"
                if r.get("n_failed") not in (None, "", "0"):
                    n += f" <span class='sd'>({esc(r['n_failed'])} failed)</span>"
                out.append([esc(r.get("label") or r["method"]), n]
                           + [c.cell(r, best[c.name], distinct[c.name]) for c in shown])
        title, note = GROUPS.get(g, (g, ""))
        html.append(f"<div class='card'><h3>{esc(title)}</h3>" + (f"<p class='meta'>{esc(note)}.</p>" if note else "")
                    + table(["method", "seeds done"] + [c.title() for c in shown], out) + "</div>")
    return "<div class='figs'>" + "".join(html) + "</div>"  # side by side where they fit


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
        rows: list[list[Any]] = []
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
        html.append(f"<div class='card'><h3>{esc(frac_label(frac))} of the training tiles labelled</h3>"
                    + table(["class"] + [label(m) + " %" for m in cols], rows) + "</div>")
    return "<div class='figs'>" + "".join(html) + "</div>"


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
    """HTML table of every cell: method, fraction, seed, status, test and val Kappa, link to its folder."""
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
            ("<p>Metrics in %, mean ± sample std over seeds; <strong>bold</strong> = best mean per column and "
             "label fraction. Each fine-tuning keeps its best epoch on the val scenes; the test scenes are used "
             "for nothing else.</p>"),
            results_tables(out / "results.csv")]
    figs = []
    if plot is not None and plot.is_file():
        figs.append(figure(file_uri(plot), "Test Kappa, mean ± std over seeds.", alt=plot.name))
    for name, caption in FIGURES:
        if (out / name).is_file():
            figs.append(figure(file_uri(out / name), caption, alt=name))
    if figs:
        body += ["<h2>Plots</h2>", "<div class='figs'>" + "".join(figs) + "</div>"]
    body += ["<h2>Per-class IoU</h2>", ("<p>Test IoU per class in %, mean over finished seeds; "
                                        "<strong>bold</strong> = best method per class.</p>"),
             per_class_tables(out, cells, ds.classes if ds is not None else None)]
    body += ["<h2>Test scenes</h2>", scenes_section(out, cells, data)]
    n = {s: sum(c.status == s for c in cells) for s in ("done", "failed", "pending")}
    body.append(f"<h2>Cells</h2><details {'open' if n['failed'] else ''}><summary>{len(cells)} cells: {n['done']} "
                f"done, {n['failed']} failed, {n['pending']} pending</summary><div class='card'>{cells_table(cells)}"
                "</div></details>")
    meta = f"data <code>{esc(data)}</code>" + (f" ({esc(ds.name)})" if ds is not None else "")
    path = out / "report.html"
    default = "Experiment results" + (f": {ds.name}" if ds is not None else "")
    write_text(path, document(title or default, "\n".join(body), meta=meta,
                              note=markdown_inline(note) if note else ""))
    return path
