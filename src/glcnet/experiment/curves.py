"""``probe_curves.png``: frozen-probe mIoU on the val scenes against pretraining step, per method.

Read from each pretraining's ``metrics.jsonl`` (rows with ``probe/<layer>_miou``, written by
:class:`glcnet.finetune.probe.ProbeCallback`). One panel per probed layer; per method a
thin line per seed and a thick line for the mean over seeds at the steps all seeds probed.
Step 0 is the random initialisation, so the left end of every line is the baseline the
pretraining has to beat; the dashed line is the mean random-init probe of the grid's
``none`` cells (when present). Rising curves say "keep pretraining", flat ones "stop".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from glcnet.utils.atomic import atomic_path

LAYERS = ("decoder", "aspp")


def read_curve(metrics_jsonl: Path, layer: str, metric: str = "miou") -> dict[int, float]:
    """``{step: value}`` of ``probe/<layer>_<metric>`` in one run's metrics.jsonl (cut lines skipped)."""
    key = f"probe/{layer}_{metric}"
    out: dict[int, float] = {}
    if not metrics_jsonl.is_file():
        return out
    for line in metrics_jsonl.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key in row and row.get("step") is not None:
            out[int(row["step"])] = float(row[key])
    return out


def plot_probe_curves(runs: Mapping[str, Sequence[Path]], path: Path, labels: dict[str, str] | None = None,
                      baseline: dict[str, float] | None = None, title: str = "") -> bool:
    """Plot the curves of ``runs`` (method -> pretraining run folders); False (nothing written) without any."""
    curves = {layer: {m: [c for r in rs if (c := read_curve(Path(r) / "metrics.jsonl", layer))]
                      for m, rs in runs.items()} for layer in LAYERS}
    layers = [layer for layer in LAYERS if any(curves[layer].values())]
    if not layers:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or {}
    fig, axes = plt.subplots(1, len(layers), figsize=(5.2 * len(layers) + 2.2, 3.8), squeeze=False,
                             constrained_layout=True)
    for ax, layer in zip(axes[0], layers):
        for i, (m, cs) in enumerate(curves[layer].items()):
            if not cs:
                continue
            color = f"C{i % 10}"
            for c in cs:
                steps = sorted(c)
                ax.plot(steps, [100 * c[s] for s in steps], color=color, alpha=0.3, lw=0.8)
            common = sorted(set.intersection(*(set(c) for c in cs)))
            if common:
                ax.plot(common, [100 * sum(c[s] for c in cs) / len(cs) for s in common], color=color, lw=2,
                        marker="o", ms=3, label=f"{labels.get(m, m)} (n={len(cs)})")
        base = (baseline or {}).get(layer)
        if base is not None and not math.isnan(base):
            ax.axhline(100 * base, color="k", ls="--", lw=1, label="random init (none cells)")
        ax.set_xlabel("pretraining step")
        ax.set_ylabel(f"val mIoU (%) of a linear probe on the {layer} map")
        ax.set_title(f"{layer} features", fontsize=9)
        ax.grid(alpha=0.3)
    handles, names = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right upper", fontsize=7)
    fig.suptitle(title or "Frozen-feature probe during pretraining (thin: seeds, thick: mean)", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return True
