"""``glcnet info DIR``: summary of a prepared data set (scenes, tiles, splits, classes, bands)."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from glcnet.data.splits import ALL_SPLITS, SPLITS


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet info``."""
    p.add_argument("dir", help="prepared data set folder (glcnet prepare)")


def summary(meta: dict[str, Any], split_info: dict[str, Any], tiles: Counter, brief: bool = False) -> str:
    """Human-readable summary from ``dataset.json``, ``splits.json`` and tiles per split."""
    classes, bands = meta["classes"], meta["bands"]
    lines = [f"name: {meta.get('name')} (format {meta.get('format')}), tile {meta.get('tile_size')} "
             f"stride {meta.get('stride')}, seed {meta.get('seed')}",
             f"bands: {','.join(bands)} ({meta.get('dtype')}); value range "
             + " ".join(f"{lo:g}..{hi:g}" for lo, hi in meta["value_range"]),
             f"classes ({len(classes)}): {', '.join(classes)}; ignore index {meta['ignore_index']}",
             "split       scenes   tiles"]
    scenes = split_info.get("scenes", {})
    for sp in ALL_SPLITS:
        lines.append(f"{sp:<10} {len(scenes.get(sp, [])):>7} {tiles.get(sp, 0):>7}")
    subsets = split_info.get("labelled", {})
    lines.append("labelled subsets (train tiles): " + ", ".join(f"{k}: {len(v)}" for k, v in subsets.items()))
    if brief:
        return "\n".join(lines)
    lines.append("mean: " + " ".join(f"{v:.4f}" for v in meta["mean"])
                 + "; std: " + " ".join(f"{v:.4f}" for v in meta["std"]))
    counts = meta.get("class_counts", {})
    totals = {s: sum(counts.get(s, [])) for s in SPLITS}
    width = max(len(c) for c in ["class", *classes])
    lines.append("class frequencies (% of labelled pixels):")
    lines.append(f"  {'class':<{width}} " + " ".join(f"{s:>7}" for s in SPLITS))
    for i, c in enumerate(classes):
        cells = [f"{100 * counts[s][i] / totals[s]:7.2f}" if totals[s] else f"{'-':>7}" for s in SPLITS]
        lines.append(f"  {c:<{width}} " + " ".join(cells))
    names = [f"{s['name']} ({s['split']}, {s['width']}x{s['height']})" for s in meta["scenes"]]
    lines.append("scenes: " + ", ".join(names[:20]) + (f" ... ({len(names)} in all)" if len(names) > 20 else ""))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet info``; returns the exit status."""
    from glcnet.data.prepared import PreparedDataset

    ds = PreparedDataset(args.dir)
    print(summary(ds.meta, ds.split_info, Counter(t.split for t in ds.tiles(ALL_SPLITS))))
    return 0
