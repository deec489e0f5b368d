"""Results of an experiment grid: ``results.csv``, ``results.md``, the Kappa plot.

Each metric is aggregated over seeds as ``mean ± std`` with the sample standard deviation
``std = sqrt(sum (x_i - mean)^2 / (n - 1))`` (shown only when n >= 2). Rows are methods in
the paper's order, column groups are label fractions; in Markdown, values are in percent
and the best mean of every column is in bold. Failed cells are counted, never averaged.
A second table gives, per method, the paired difference of test Kappa to each baseline
present (random init, SimCLR) with its 95% interval (:mod:`glcnet.experiment.stats`),
the val Kappa, and the frozen-feature probe (``probe_*``: :mod:`glcnet.finetune.probe`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from glcnet.experiment.stats import Paired, crossed_difference, paired_difference
from glcnet.utils.atomic import atomic_path, write_text

METRICS = [("kappa", "Kappa"), ("miou", "mIoU"), ("oa", "OA"), ("mean_f1", "mean F1")]
# frozen-feature probe of each cell's initial network (val scenes): key in CellResult.probe, label
PROBE = [("decoder_miou", "probe mIoU (decoder)"), ("aspp_miou", "probe mIoU (ASPP)"),
         ("decoder_kappa", "probe Kappa (decoder)"), ("aspp_kappa", "probe Kappa (ASPP)")]
# paired differences are taken to these, where present (to GLCNet: for its variants and the newer methods)
BASELINES = ("none", "simclr", "glcnet")
# the paper's row order (baselines, then GLCNet ablations, then GLCNet), then the methods after GLCNet
PAPER_ORDER = ["none", "imagenet", "inpainting", "jigsaw", "simclr", "mocov2",
               "glcnet_no_style", "glcnet_no_global", "glcnet_no_local", "glcnet",
               "glcnet_fn", "glcnet_m", "glcnet_m_fn", "vicregl"]
LABELS = {
    "none": "Random init", "imagenet": "ImageNet", "inpainting": "Inpainting", "jigsaw": "Jigsaw",
    "simclr": "SimCLR", "mocov2": "MoCo v2", "glcnet": "GLCNet",
    "glcnet_no_style": "GLCNet w/o style (mean only)", "glcnet_no_global": "GLCNet w/o global (local only)",
    "glcnet_no_local": "GLCNet w/o local (global only)",
    "glcnet_fn": "GLCNet, false negatives removed", "glcnet_m": "GLCNet-M (momentum, queues)",
    "glcnet_m_fn": "GLCNet-M, false negatives removed", "vicregl": "VICRegL",
}


@dataclass
class CellResult:
    """One grid cell: ``status`` is done | failed | pending; ``metrics`` values in [0, 1]."""

    method: str
    fraction: float
    seed: int
    path: str  # cell folder, relative to the experiment folder
    status: str
    metrics: dict[str, float] = field(default_factory=dict)  # test scenes
    error: str = ""
    val: dict[str, float] = field(default_factory=dict)  # val scenes, at the selected epoch (model selection)
    probe: dict[str, float] = field(default_factory=dict)  # frozen probe of the initial network: decoder_miou, ...
    pretrain_seed: int | None = None  # the pretraining it starts from, when the grid has several (pretrain_seeds)


@dataclass
class Summary:
    """Aggregate of one (method, fraction) over seeds."""

    mean: dict[str, float]
    std: dict[str, float]  # nan when fewer than 2 seeds finished
    n_done: int
    n_failed: int
    n_total: int


def order_methods(methods: list[str]) -> list[str]:
    """Methods in the paper's order, each followed by its ``name[...]`` variants in their given
    order; unknown names keep their given order at the end."""
    def key(i_m: tuple[int, str]) -> tuple[int, int, int]:
        name, overrides = split_spec(i_m[1])
        rank = PAPER_ORDER.index(name) if name in PAPER_ORDER else len(PAPER_ORDER)
        return rank, bool(overrides), i_m[0]

    return [m for _, m in sorted(enumerate(methods), key=key)]


def split_spec(method: str) -> tuple[str, str]:
    """``"glcnet[method.lam=0.25]"`` -> ``("glcnet", "method.lam=0.25")``; plain names -> (name, "")."""
    name, _, rest = method.partition("[")
    return name, rest[:-1] if rest.endswith("]") else rest


def label(method: str) -> str:
    """Row label of a method entry: ``glcnet[method.lam=0.25]`` -> ``GLCNet [method.lam=0.25]``."""
    name, overrides = split_spec(method)
    return LABELS.get(name, name) + (f" [{overrides}]" if overrides else "")


def frac_label(fraction: float) -> str:
    """``0.01`` -> ``1%``."""
    return f"{fraction * 100:g}%"


def summarise(cells: list[CellResult]) -> dict[tuple[str, float], Summary]:
    """Mean and sample std over seeds of every metric, per (method, fraction); ``val_<metric>``
    for the val-scene metrics of the selected epochs (where recorded)."""
    groups: dict[tuple[str, float], list[CellResult]] = {}
    for c in cells:
        groups.setdefault((c.method, c.fraction), []).append(c)
    out = {}
    for key, group in groups.items():
        done = [c for c in group if c.status == "done"]
        mean, std = {}, {}
        keys = [k for k, _ in METRICS] + ["val_" + k for k, _ in METRICS] + ["probe_" + k for k, _ in PROBE]
        for m in keys:
            src = [(c.val, m[4:]) if m.startswith("val_") else (c.probe, m[6:]) if m.startswith("probe_")
                   else (c.metrics, m) for c in done]
            xs = [float(d[k]) for d, k in src if k in d]
            mean[m] = sum(xs) / len(xs) if xs else math.nan
            std[m] = (math.sqrt(sum((x - mean[m]) ** 2 for x in xs) / (len(xs) - 1))
                      if len(xs) >= 2 else math.nan)
        out[key] = Summary(mean, std, len(done), sum(c.status == "failed" for c in group), len(group))
    return out


def _overrides(method: str) -> list[str]:
    """The overrides of a method entry: ``glcnet[a=1,finetune.b=2]`` -> ``["a=1", "finetune.b=2"]``."""
    from glcnet.utils.structured import split_top

    return split_top(split_spec(method)[1])


def matched_baseline(method: str, baseline: str, present: set[str]) -> str:
    """The entry of ``baseline`` fine-tuned as ``method`` is (its overrides are exactly ``method``'s
    ``finetune.*`` ones: ``none[finetune.crop=64]`` for ``glcnet[finetune.crop=64]``) when the grid has
    one, else ``baseline``: a fine-tuning change is judged against random init fine-tuned the same way."""
    ft = sorted(o for o in _overrides(method) if o.startswith("finetune."))
    match = [m for m in sorted(present) if ft and split_spec(m)[0] == baseline and sorted(_overrides(m)) == ft]
    return match[0] if match and match[0] != method else baseline


def paired(cells: list[CellResult], method: str, baseline: str, fraction: float, metric: str = "kappa") -> Paired:
    """Paired difference ``method - baseline`` of a test metric over the seeds both finished; with
    several pretraining seeds, over (pretraining, seed) with both variances (:func:`crossed_difference`).
    A side with one pretraining (or none: random init) is paired with each of the other side's, so
    ``paired(a, b) == -paired(b, a)``."""
    def by_cell(m: str) -> dict[tuple[int, int], float]:
        return {(c.pretrain_seed or 0, c.seed): c.metrics[metric] for c in cells
                if c.method == m and c.fraction == fraction and c.status == "done" and metric in c.metrics}

    a, b = by_cell(method), by_cell(baseline)
    if len({p for p, _ in b}) <= 1:
        b_seed = {s: v for (_, s), v in b.items()}
        d = {(p, s): v - b_seed[s] for (p, s), v in a.items() if s in b_seed}
    elif len({p for p, _ in a}) <= 1:  # random init against a method with several pretrainings: each of them
        a_seed = {s: v for (_, s), v in a.items()}
        d = {(p, s): a_seed[s] - v for (p, s), v in b.items() if s in a_seed}
    else:
        d = {k: v - b[k] for k, v in a.items() if k in b}
    if len({p for p, _ in d}) <= 1:
        seeds = sorted(d)
        return paired_difference([d[k] for k in seeds], [0.0] * len(seeds))
    return crossed_difference(d)


def _pct(v: float, sign: bool = False) -> str:
    return "–" if math.isnan(v) else f"{100 * v:+.2f}" if sign else f"{100 * v:.2f}"


def _diff_text(p: Paired) -> str:
    if p.n == 0:
        return "–"
    if p.n < 2:
        return f"{_pct(p.mean, True)} (n=1)"
    return f"{_pct(p.mean, True)} [{_pct(p.low, True)}, {_pct(p.high, True)}]"


def paired_markdown(cells: list[CellResult], methods: list[str], fractions: list[float]) -> list[str]:
    """Lines of the second table: paired Kappa differences to the baselines, val Kappa, probe."""
    summary = summarise(cells)
    bases = [b for b in BASELINES if any(c.method == b for c in cells)]
    present = {c.method for c in cells}
    has_probe = any(c.probe for c in cells)
    if not bases and not has_probe:
        return []
    cols = [f"Δ Kappa vs {label(b)} [95% CI]" for b in bases] + ["val Kappa"]
    cols += [name for _, name in PROBE[:2]] if has_probe else []
    head = ["Method"] + [f"{c} @{frac_label(f)}" for f in fractions for c in cols]
    lines = ["", "## Paired differences, validation and frozen-feature probe", "",
             "Δ: mean over seeds of (method − baseline) test Kappa for the same seed (same labelled subset, "
             "crops, order and initialisation of the parts not loaded), in points, with its 95% Student-t "
             "interval; with several pretrainings, over (pretraining, seed) with an interval that includes the "
             "pretrainings' variance (two-way random effects). A row with fine-tuning overrides is compared with "
             "the baseline entry fine-tuned the same way where the grid has one. Probe: a linear classifier per "
             "pixel fitted on the frozen features of the network the "
             "fine-tuning starts from (labelled subset of the cell), scored on the val scenes (mIoU %).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        row = [label(m)]
        for f in fractions:
            s = summary.get((m, f))
            for b in bases:
                row.append("" if m == b else _diff_text(paired(cells, m, matched_baseline(m, b, present), f)))
            row.append("–" if s is None else _pct(s.mean["val_kappa"]))
            if has_probe:
                row += ["–" if s is None else _pct(s.mean["probe_" + k]) for k, _ in PROBE[:2]]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _best(summary: dict[tuple[str, float], Summary], methods: list[str], fraction: float, metric: str) -> float:
    """Highest mean (rounded as displayed, in %) of a column; nan when the column is empty."""
    vals = [round(100 * summary[(m, fraction)].mean[metric], 2) for m in methods
            if (m, fraction) in summary and not math.isnan(summary[(m, fraction)].mean[metric])]
    return max(vals) if vals else math.nan


def markdown(cells: list[CellResult], title: str = "", note: str = "") -> str:
    """The results table (paper layout) plus a list of every cell with a link to its folder."""
    summary = summarise(cells)
    methods = order_methods(list(dict.fromkeys(c.method for c in cells)))
    fractions = sorted({c.fraction for c in cells})
    lines = [f"# {title or 'Experiment results'}", ""]
    if note:
        lines += [note, ""]
    lines += ["Test-scene metrics in %, mean ± sample std over seeds (n = finished seeds); "
              "**bold** = best mean per column. Each fine-tuning keeps its best epoch on the val scenes "
              "(val Kappa in the list of cells); the test scenes are used for nothing else.", ""]
    head = ["Method"] + [f"{name} @{frac_label(f)}" for f in fractions for _, name in METRICS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        row = [label(m)]
        for f in fractions:
            s = summary.get((m, f))
            for key, _ in METRICS:
                if s is None or math.isnan(s.mean[key]):
                    row.append("failed" if s is not None and s.n_failed else "–")
                    continue
                v = round(100 * s.mean[key], 2)
                txt = f"{v:.2f}" + ("" if math.isnan(s.std[key]) else f" ± {100 * s.std[key]:.2f}")
                if s.n_done < s.n_total:
                    txt += f" (n={s.n_done}/{s.n_total})"
                row.append(f"**{txt}**" if v == _best(summary, methods, f, key) else txt)
        lines.append("| " + " | ".join(row) + " |")
    lines += paired_markdown(cells, methods, fractions)
    lines += ["", "## Cells", "", "| method | fraction | seed | status | Kappa % | val Kappa % | folder |",
              "|---|---|---|---|---|---|---|"]
    for c in sorted(cells, key=lambda c: (methods.index(c.method), c.fraction, c.seed)):
        kappa = f"{100 * c.metrics['kappa']:.2f}" if c.status == "done" and "kappa" in c.metrics else ""
        val = f"{100 * c.val['kappa']:.2f}" if c.status == "done" and "kappa" in c.val else ""
        status = c.status if c.status != "failed" else f"failed: {c.error[:120]}"
        lines.append(f"| {label(c.method)} | {frac_label(c.fraction)} | {c.seed} | {status} | {kappa} | {val} "
                     f"| [{c.path}]({c.path}) |")
    return "\n".join(lines) + "\n"


def csv_text(cells: list[CellResult]) -> str:
    """One row per (method, fraction): counts, mean and std of each test metric and of each val
    metric at the selected epochs (``val_*``, in [0, 1]), cell folders."""
    summary = summarise(cells)
    methods = order_methods(list(dict.fromkeys(c.method for c in cells)))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = [p + k for p in ("", "val_") for k, _ in METRICS] + ["probe_" + k for k, _ in PROBE]
    bases = [b for b in BASELINES if any(c.method == b for c in cells)]
    present = {c.method for c in cells}
    w.writerow(["method", "label", "fraction", "n_done", "n_failed", "n_total"]
               + [f"{k}_{s}" for k in keys for s in ("mean", "std")]
               + [f"dkappa_vs_{b}_{s}" for b in bases for s in ("n", "mean", "low", "high")] + ["cells"])

    def num(v: float) -> str:
        return f"{v:.6f}" if not math.isnan(v) else ""

    for m in methods:
        for f in sorted({c.fraction for c in cells}):
            s = summary.get((m, f))
            if s is None:
                continue
            stats = [num(v) for k in keys for v in (s.mean[k], s.std[k])]
            for b in bases:
                p = paired(cells, m, matched_baseline(m, b, present), f)
                stats += [str(p.n), num(p.mean), num(p.low), num(p.high)]
            paths = ";".join(c.path for c in cells if c.method == m and c.fraction == f)
            w.writerow([m, label(m), f"{f:g}", s.n_done, s.n_failed, s.n_total, *stats, paths])
    return buf.getvalue()


PLOTS = {"fractions": "kappa_vs_fraction.png", "methods": "kappa_by_method.png"}


def plot_name(cells: list[CellResult]) -> str:
    """``kappa_vs_fraction.png`` (a line per method over several fractions) or
    ``kappa_by_method.png`` (one fraction: a point per method)."""
    return PLOTS["fractions" if len({c.fraction for c in cells}) > 1 else "methods"]


def plot(cells: list[CellResult], path: Path, title: str = "") -> None:
    """Test Kappa (mean ± std over seeds) against label fraction, one line per method; with a
    single fraction, one point per method along the x axis instead (see :func:`plot_name`)."""
    from matplotlib.figure import Figure

    summary = summarise(cells)
    fractions = sorted({c.fraction for c in cells})
    methods = order_methods(list(dict.fromkeys(c.method for c in cells)))

    def point(m: str, f: float) -> tuple[float, float] | None:
        s = summary.get((m, f))
        if s is None or not s.n_done or math.isnan(s.mean["kappa"]):
            return None
        return 100 * s.mean["kappa"], 0.0 if math.isnan(s.std["kappa"]) else 100 * s.std["kappa"]

    if len(fractions) == 1:
        f = fractions[0]
        fig = Figure(figsize=(max(4.5, 1.0 * len(methods) + 1.5), 4), layout="constrained")
        ax = fig.add_subplot()
        for i, m in enumerate(methods):
            p = point(m, f)
            if p is not None:
                ax.errorbar([i], [p[0]], yerr=[p[1]], marker="o", markersize=8, capsize=4, color=f"C{i % 10}")
                ax.annotate(f"{p[0]:.1f}", (i, p[0]), textcoords="offset points", xytext=(9, 0), va="center",
                            fontsize=8)
        ax.set_xticks(range(len(methods)), [label(m) for m in methods], rotation=20 if len(methods) > 4 else 0,
                      ha="right" if len(methods) > 4 else "center", fontsize=8)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_xlabel("pretraining method")
        heading = f"Test Kappa by pretraining method, {frac_label(f)} of the training tiles labelled"
    else:
        fig = Figure(figsize=(8, 4.2), layout="constrained")
        ax = fig.add_subplot()
        for i, m in enumerate(methods):
            shift = 1 + 0.03 * (i - (len(methods) - 1) / 2)  # side by side, so error bars do not hide each other
            pts = [(f * 100 * shift, p) for f in fractions if (p := point(m, f)) is not None]
            if pts:
                ax.errorbar([x for x, _ in pts], [p[0] for _, p in pts], yerr=[p[1] for _, p in pts],
                            marker="o", capsize=3, label=label(m), color=f"C{i % 10}")
        ax.set_xscale("log")
        ax.set_xticks([f * 100 for f in fractions], [frac_label(f) for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("labelled fraction of the training tiles (log scale)")
        if ax.lines:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        heading = "Test Kappa against the labelled fraction"
    ax.set_ylabel("Kappa (%), mean ± std over seeds")
    ax.set_title(f"{title}\n{heading}" if title else heading, fontsize=9)
    ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png", bbox_inches="tight")


def write_tables(cells: list[CellResult], out: str | Path, title: str = "", note: str = "",
                 with_plot: bool = True) -> dict[str, Path]:
    """Write results.csv, results.md and (``with_plot``) the Kappa plot (:func:`plot_name`) into ``out``,
    atomically; a plot of the other kind left by an earlier run of this grid is removed."""
    out = Path(out)
    paths = {"csv": out / "results.csv", "md": out / "results.md", "png": out / plot_name(cells)}
    write_text(paths["csv"], csv_text(cells))
    write_text(paths["md"], markdown(cells, title, note))
    if with_plot:
        plot(cells, paths["png"], title)
        for name in PLOTS.values():
            if name != paths["png"].name:
                (out / name).unlink(missing_ok=True)
    return paths

