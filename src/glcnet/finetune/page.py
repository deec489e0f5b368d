"""``report.html``: one self-contained page (no network, images inlined as base64) per report.

Building blocks shared by the evaluation page (one model, :func:`evaluation_page`) and the
experiment page (several methods, :mod:`glcnet.experiment.report`): tables, figures,
the class legend and scene rows ``image | truth | prediction...``. Every value is
HTML-escaped; images are ``data:`` URIs, so the page can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glcnet.finetune.report import band_label, colorize, display_rgb, display_step
from glcnet.utils.atomic import write_text

PAGE_SCENES = 4  # scenes shown as image rows (the per-scene metrics table lists all of them)

CSS = """
:root { --fg: #1d2430; --muted: #5b6675; --line: #d9dee5; --bg: #f6f7f9; --accent: #2f6fb2; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); }
main { max-width: 1320px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 8px; }
p, li { max-width: 980px; }
.meta { color: var(--muted); margin: 0 0 14px; }
.note { background: #fff4d6; border: 1px solid #e8c66a; border-radius: 6px; padding: 10px 14px; margin: 12px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin: 12px 0;
        overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: #eef1f5; font-weight: 600; }
th.grouphead { text-align: center; border-bottom: 2px solid #fff; border-left: 6px solid #fff; }
th.left, td.left { text-align: left; }
tr.group td { background: #f3f5f8; font-weight: 600; text-align: left; color: var(--muted); }
td .sd { color: var(--muted); font-size: 12px; }
td.best { font-weight: 700; }
.figs { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.figs > .card { margin: 0; }
.card h3 { margin-top: 2px; }
.card p.meta { margin: 0 0 8px; max-width: 520px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 6px; max-width: 640px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 8px 0 12px; }
.legend span { display: inline-flex; align-items: center; gap: 6px; }
.legend i { width: 16px; height: 16px; border: 1px solid #777; border-radius: 3px; display: inline-block; }
.scenes { display: grid; gap: 8px 10px; align-items: start; }
.scenes .head { font-weight: 600; font-size: 13px; text-align: center; }
.scenes .name { font-weight: 600; margin-top: 10px; grid-column: 1 / -1; }
.scenes img { width: 100%; height: auto; display: block; border-radius: 4px; }
.scenes img.classes { image-rendering: pixelated; }
.scenes .missing { color: var(--muted); font-size: 12px; text-align: center; padding: 20px 4px;
                   border: 1px dashed var(--line); border-radius: 4px; }
details summary { cursor: pointer; color: var(--accent); }
a { color: var(--accent); }
"""


# ----------------------------------------------------------------------------- images
def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:`` URI of ``data`` (images embedded in report.html)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def file_uri(path: Path) -> str:
    """A PNG/JPEG file as a ``data:`` URI."""
    mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    return data_uri(path.read_bytes(), mime)


def rgb_uri(rgb: np.ndarray, jpeg: bool = True) -> str:
    """``[H, W, 3]`` uint8 as a JPEG (photos) or PNG (class maps) ``data:`` URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG" if jpeg else "PNG", quality=88, optimize=True)
    return data_uri(buf.getvalue(), "image/jpeg" if jpeg else "image/png")


def scene_images(image: np.ndarray, mask: np.ndarray | None, colors: list[list[int]],
                 bands: Sequence[str]) -> tuple[str, str | None]:
    """``data:`` URIs of the scene's display image and ground truth, subsampled like
    ``pred/NAME.png`` (:func:`glcnet.finetune.report.display_step`)."""
    step = display_step(image.shape)
    img = rgb_uri(display_rgb(np.asarray(image[:, ::step, ::step], dtype=np.float32), bands))
    truth = None if mask is None else rgb_uri(colorize(np.asarray(mask[::step, ::step], dtype=np.uint8), colors),
                                              jpeg=False)
    return img, truth


# ----------------------------------------------------------------------------- blocks
def esc(x: Any) -> str:
    """HTML-escaped ``str(x)``."""
    return html.escape(str(x))


def pct(v: Any) -> str:
    """A value in [0, 1] as a percentage with 2 decimals; ``-`` for None/NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * float(v):.2f}"


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1,
          groups: Sequence[tuple[str, int]] = ()) -> str:
    """``<table>``: ``head`` plain text; ``rows`` cells already HTML, or ``(html, class, style)``
    (a row ``["<group>", html]`` is a full-width group row); the first ``left`` columns are
    left-aligned; ``groups`` ``(title, span)`` add a header row above ``head``."""
    out = ["<table><thead>"]
    if groups:
        out.append("<tr>" + "".join(f'<th colspan="{n}" class="grouphead">{esc(t)}</th>' for t, n in groups) + "</tr>")
    out.append("<tr>")
    out += [f'<th class="{"left" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        if row and row[0] == "<group>":
            out.append(f'<tr class="group"><td colspan="{len(head)}">{row[1]}</td></tr>')
            continue
        cells = []
        for i, c in enumerate(row):
            cls = "left" if i < left else ""
            if isinstance(c, tuple):  # (html, extra classes, style)
                c, extra, style = (c + ("", ""))[:3]
                cls = f"{cls} {extra}".strip()
                cells.append(f'<td class="{cls}" style="{style}">{c}</td>')
            else:
                cells.append(f'<td class="{cls}">{c}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def shade(v: float | None) -> str:
    """Background for a value in [0, 1]: white to green."""
    if v is None or math.isnan(v):
        return ""
    return f"background: rgba(46, 140, 80, {0.08 + 0.45 * max(0.0, min(1.0, v)):.2f})"


def figure(uri: str, caption: str = "", alt: str = "", width: int | None = None) -> str:
    """``<figure>`` of an image URI with an optional caption and width."""
    w = f' style="width:{width}px"' if width else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure{w}><img src="{uri}" alt="{esc(alt or caption)}">{cap}</figure>'


def legend(classes: Sequence[str], colors: Sequence[Sequence[int]], ignore: bool = True) -> str:
    """HTML legend of the class colours (and black = ignore)."""
    items = [f'<span><i style="background: rgb({c[0]},{c[1]},{c[2]})"></i>{esc(n)}</span>'
             for n, c in zip(classes, colors)]
    if ignore:
        items.append('<span><i style="background: #000"></i>ignore / no label</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def scene_rows(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[str | None]]],
               classes_from: int = 1) -> str:
    """A grid: a header of ``columns``, then per scene its name and one image per column
    (``None``: a placeholder). Columns from ``classes_from`` on are class maps (pixelated)."""
    n = len(columns)
    out = [f'<div class="scenes" style="grid-template-columns: repeat({n}, minmax(0, 1fr))">']
    out += [f'<div class="head">{esc(c)}</div>' for c in columns]
    for name, uris in rows:
        out.append(f'<div class="name">{esc(name)}</div>')
        for i, (col, uri) in enumerate(zip(columns, uris)):
            if uri is None:
                out.append('<div class="missing">no prediction stored</div>')
            else:
                cls = ' class="classes"' if i >= classes_from else ""
                out.append(f'<img{cls} src="{uri}" alt="{esc(name)}: {esc(col)}">')
    out.append("</div>")
    return "".join(out)


def document(title: str, body: str, meta: str = "", note: str = "") -> str:
    """The whole page: ``title``, a ``meta`` line, an optional highlighted ``note``, then ``body``."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    from glcnet import __version__

    meta_line = f'<p class="meta">{meta + " · " if meta else ""}glcnet {esc(__version__)} · {stamp}</p>'
    note_html = f'<div class="note">{note}</div>' if note else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
            f"<body><main><h1>{esc(title)}</h1>{meta_line}{note_html}\n{body}\n</main></body></html>\n")


def markdown_inline(text: str) -> str:
    """``**bold**`` and ``code`` of a one-line note, escaped, as HTML."""
    import re

    out = esc(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


# ----------------------------------------------------------------------------- evaluation page
def evaluation_page(folder: Path, metrics: dict[str, Any], ckpt: dict[str, Any], bands: Sequence[str],
                    scenes: Sequence[tuple[str, str, str | None, str]]) -> Path:
    """Write ``folder/report.html`` for one model: summary, per-class metrics, confusion matrix,
    per-scene metrics and ``scenes`` rows ``(name, image_uri, truth_uri, pred_uri)``."""
    classes, colors = list(ckpt["classes"]), ckpt["colors"]
    body = []
    summary_rows = [["all labelled pixels"] + [pct(metrics[k]) for k in ("oa", "kappa", "miou", "mean_f1")]
                    + [f"{metrics['pixels']:,}"]]
    if metrics.get("isprs"):
        i = metrics["isprs"]
        summary_rows.append(["ISPRS convention (eroded boundaries, clutter excluded)"]
                            + [pct(i[k]) for k in ("oa", "kappa", "miou", "mean_f1")] + [f"{i['pixels']:,}"])
    body.append("<h2>Metrics</h2><div class='card'>"
                + table(["pixels counted", "OA %", "Kappa %", "mIoU %", "mean F1 %", "pixels"], summary_rows)
                + "</div>")
    rows = []
    for name, c in metrics["per_class"].items():
        rows.append([esc(name)] + [(pct(c[k]), "", shade(c[k]) if k == "iou" else "")
                                   for k in ("iou", "precision", "recall", "f1")] + [f"{c['support']:,}"])
    figs = ["<div class='card'><h3>Per class</h3>"
            + table(["class", "IoU %", "precision %", "recall %", "F1 %", "support (px)"], rows)
            + "<p class='meta'>–: class absent from ground truth and prediction (left out of the means).</p></div>",
            figure(file_uri(folder / "confusion.png"), "Confusion matrix, rows normalised (recall per true "
                   "class), with pixel counts.")]
    if (folder / "confusion_isprs.png").is_file():
        figs.append(figure(file_uri(folder / "confusion_isprs.png"), "Confusion matrix, ISPRS convention."))
    body.append("<div class='figs'>" + "".join(figs) + "</div>")
    per_scene = metrics.get("scenes", {})
    if per_scene:
        srows = [[esc(n)] + [pct(m[k]) for k in ("oa", "kappa", "miou", "mean_f1")] + [f"{m['pixels']:,}"]
                 for n, m in per_scene.items()]
        body.append("<h2>Scenes</h2><div class='card'>"
                    + table(["scene", "OA %", "Kappa %", "mIoU %", "mean F1 %", "pixels"], srows) + "</div>")
    if scenes:
        body.append(f"<h3>Predictions ({len(scenes)} of {len(per_scene) or len(scenes)} scenes)</h3>"
                    + legend(classes, colors)
                    + "<div class='card'>"
                    + scene_rows([f"image ({band_label(bands)})", "ground truth", "prediction"],
                                 [(n, [img, truth, pred]) for n, img, truth, pred in scenes])
                    + "</div>")
    source = ckpt.get("method") or ("random init" if ckpt.get("init") == "none" else ckpt.get("init"))
    meta = (f"{esc(metrics.get('split', ''))} split of <code>{esc(metrics.get('data', ''))}</code> · model "
            f"<code>{esc(metrics.get('checkpoint', ''))}</code>"
            + (f" · init {esc(source)}" if source else "")
            + (f" · {100 * float(ckpt['fraction']):g}% labels" if ckpt.get("fraction") is not None else ""))
    n = len(per_scene)
    title = f"Evaluation: {metrics.get('split', '')} split, {n} scene{'s' if n != 1 else ''}"
    path = folder / "report.html"
    write_text(path, document(title, "\n".join(body), meta=meta))
    return path
