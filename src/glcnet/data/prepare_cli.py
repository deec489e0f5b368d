"""``glcnet prepare FORMAT --src DIR --out DIR``: raw data set -> prepared folder."""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from typing import Any

from glcnet.data.formats import FORMATS
from glcnet.data.splits import ALL_SPLITS, DEFAULT_FRACTIONS


def _list(kind=str):
    def parse(text: str):
        try:
            return [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
    return parse


# format options: flag -> (dest, argparse kwargs); passed only when given
_FORMAT_OPTIONS: dict[str, dict[str, Any]] = {
    "--labels": dict(choices=["full", "eroded"],
                     help="potsdam/vaihingen: full labels or eroded (noBoundary, black -> 255)"),
    "--imagery": dict(choices=["RGB", "RGBIR", "IRRG"],
                      help="potsdam official layout: which orthophotos (default RGBIR)"),
    "--dsm": dict(action="store_true", default=None, help="vaihingen: add the DSM as band 'DSM'"),
    "--classes": dict(type=_list(), help="generic: class names, e.g. background,road"),
    "--bands": dict(type=_list(), help="generic: names of the image bands, e.g. R,G,B,NIR"),
    "--legend": dict(help="generic: colour masks, legend FILE (CSV/YAML/JSON rows name,r,g,b[,ignore])"),
    "--reduce-zero-label": dict(action="store_true", default=None,
                                help="generic: mask 0 -> 255, v -> v-1 (mmseg style)"),
    "--mask-threshold": dict(type=float, help="generic: binary masks, value >= T -> 1 else 0"),
}


def configure(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet prepare``."""
    formats = "; ".join(f"{n}: {f.layout}" for n, f in FORMATS.items())
    p.description = f"{p.description}. Layouts - {formats}."
    p.add_argument("format", choices=list(FORMATS))
    p.add_argument("--src", required=True, help="raw data set folder")
    p.add_argument("--out", required=True, help="prepared output folder (written atomically)")
    p.add_argument("--tile-size", type=int, default=256)
    p.add_argument("--stride", type=int, default=None, help="tile stride (default: tile size, no overlap)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random splits and labelled subsets")
    p.add_argument("--overwrite", action="store_true", help="replace OUT once the new one is complete")
    p.add_argument("--split-ratios", type=_list(float), default=[0.6, 0.2, 0.2],
                   help="train,val,test shares of scenes without a known split (default 0.6,0.2,0.2)")
    p.add_argument("--split-file", help="JSON {scene: split} with split in " + "/".join(ALL_SPLITS))
    p.add_argument("--val-scenes", type=_list(), help="train scenes to use for validation, e.g. 2_10,7_12")
    p.add_argument("--fractions", type=_list(float), default=list(DEFAULT_FRACTIONS),
                   help="labelled subsets of the train tiles (default 0.01,0.05,0.1,0.2,1.0)")
    p.add_argument("--unlabeled", help="folder of extra images without masks (pretraining only)")
    p.add_argument("--select-bands", type=_list(), help="keep/reorder bands by name, e.g. R,G,B")
    p.add_argument("--name", help="data set name (default: the format, or the source folder for generic)")
    p.add_argument("--nodata", type=float, help="no-data value of every band, e.g. -9999 (default: the GeoTIFF "
                   "nodata tag); such pixels are left out of statistics, labels and metrics")
    for flag, kw in _FORMAT_OPTIONS.items():
        p.add_argument(flag, **kw)


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet prepare``; returns the exit status."""
    from glcnet.data.info_cli import summary
    from glcnet.data.prepare import prepare

    options = {k: getattr(args, k) for k in (f[2:].replace("-", "_") for f in _FORMAT_OPTIONS)
               if getattr(args, k) is not None}
    out = prepare(args.format, args.src, args.out, tile_size=args.tile_size, stride=args.stride, seed=args.seed,
                  overwrite=args.overwrite, split_ratios=args.split_ratios, split_file=args.split_file,
                  val_scenes=args.val_scenes, fractions=args.fractions, unlabeled=args.unlabeled,
                  select_bands=args.select_bands, name=args.name, nodata=args.nodata, **options)
    with open(out / "tiles.csv", newline="") as fh:
        tiles = Counter(row["split"] for row in csv.DictReader(fh))
    print(f"prepared {args.format} -> {out}")
    print(summary(json.loads((out / "dataset.json").read_text()), json.loads((out / "splits.json").read_text()),
                  tiles, brief=True))
    return 0
