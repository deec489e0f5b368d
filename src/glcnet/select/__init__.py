"""``glcnet select``: which training tiles to label, chosen with a frozen network's features.

``glcnet select --ckpt RUN|pretrained.pt|model.pt|none --data PREPARED --budget 1%|N
--strategy random|kcenter|typiclust|probcover --out subset.json [--features style|mean|layout]
[--seed S]``

Embeds every candidate tile (the train tiles with labelled pixels: the pool ``prepare``'s random
subsets come from) with the frozen network (:mod:`glcnet.select.features`), picks the budget
(:mod:`glcnet.select.strategies`) and writes

- ``subset.json``: the chosen tiles by scene and window, in the order to label them
  (:mod:`glcnet.data.subsets`), which ``finetune subset=FILE``, ``probe.subset`` and an
  experiment's ``subsets: path/with-{seed}.json`` train on;
- ``subset.html``: the chosen tiles as thumbnails in that order, for the person who labels them.

A budget ``P%`` is the size of ``prepare``'s ``P%`` subset of the same pool, so that a selected
subset and a random one of the same fraction are compared at equal cost.
"""

from __future__ import annotations

import argparse
import html
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glcnet import outputs
from glcnet.errors import GlcnetError
from glcnet.select.strategies import STRATEGIES, select
from glcnet.utils.atomic import write_text
from glcnet.utils.progress import duration, log


def budget_count(budget: str, pool: int) -> int:
    """``"1%"`` -> the size of prepare's 1% subset of ``pool`` tiles (``ceil(f n)``, at least 1); ``"18"`` -> 18."""
    text = str(budget).strip()
    try:
        if text.endswith("%"):
            f = float(text[:-1]) / 100
            if not 0 < f <= 1:
                raise ValueError
            return max(1, math.ceil(round(f * pool, 9)))
        n = int(text)
    except ValueError:
        raise GlcnetError(f"--budget {budget}: expected a percentage of the train tiles (1%) or a tile count") from None
    if not 1 <= n <= pool:
        raise GlcnetError(f"--budget {budget}: expected 1..{pool} tiles (the train tiles with labels)")
    return n


def run(ckpt: str, data: str | Path, budget: str, strategy: str, out: str | Path, summary: str = "style",
        seed: int = 0, bn_tiles: int = 256, overwrite: bool = False) -> dict[str, Any]:
    """Choose the tiles and write ``out`` (+ ``out.html``); returns the subset file's content."""
    from glcnet.config import ModelConfig
    from glcnet.data.prepared import PreparedDataset, sample_tiles
    from glcnet.finetune.probe_cli import load_network
    from glcnet.models.batchnorm import recalibrated
    from glcnet.select.features import embed, tile_images

    if strategy not in STRATEGIES:
        raise GlcnetError(f"--strategy {strategy}: expected one of {', '.join(STRATEGIES)}")
    out = Path(out)
    if out.suffix != ".json":
        raise GlcnetError(f"{out}: the subset file's name must end in .json")
    page = out.with_suffix(".html")
    mine = out.exists()
    outputs.check_file(out, "select", inputs=[data, ckpt], overwrite=overwrite)  # ours, and --overwrite
    if page.exists() and not mine:  # the page is ours only beside our subset file
        raise GlcnetError(f"{page}: exists and was not written by glcnet select; it is left as it is "
                          "(choose another --out)")
    ds = PreparedDataset(data)
    pool = ds.labelled_pool()
    n = budget_count(budget, len(pool))
    t0 = time.perf_counter()
    byid = {t.tile_id: t for t in ds.tiles("train")}
    tiles = [byid[i] for i in pool]
    net, info = load_network(ckpt, ModelConfig(), ds.in_channels, ds.mean, ds.std, seed)
    if bn_tiles > 0:  # the same batch-norm regime for any network (as the probe)
        net = recalibrated(net, sample_tiles(ds, ("train", "unlabeled"), bn_tiles), 32)
    torch.manual_seed(seed)
    x = embed(net, tile_images(ds, tiles), summary)
    order = select(x, n, strategy, seed)
    seconds = time.perf_counter() - t0
    chosen = [tiles[i] for i in order]
    obj = {"version": 1, "data": str(Path(data).resolve()), "data_id": ds.identity, "strategy": strategy,
           "budget": n, "candidates": len(tiles), "seed": seed,
           "features": {"init": info.get("init"), "method": info.get("method"), "summary": summary,
                        "bn_tiles": bn_tiles},
           "seconds": round(seconds, 2),
           "tiles": [{"rank": r + 1, "scene": t.scene, "x": t.x, "y": t.y, "width": t.width, "height": t.height}
                     for r, t in enumerate(chosen)]}
    outputs.write_file(out, "select", obj)
    write_text(page, _page(ds, chosen, obj))
    log.info(f"select: {n} of {len(tiles)} tiles ({strategy} on the {summary} features of {info.get('init')}) "
             f"in {duration(seconds)}")
    return obj


def _page(ds: Any, tiles: list[Any], obj: dict[str, Any]) -> str:
    """Thumbnails of the chosen tiles in labelling order (one self-contained page)."""
    from glcnet.finetune.page import document, figure, rgb_uri
    from glcnet.finetune.report import display_rgb

    figs = []
    for r, t in enumerate(tiles, 1):
        img = np.asarray(ds.image(t.scene)[:, t.y:t.y + t.height, t.x:t.x + t.width], dtype=np.float32)
        figs.append(figure(rgb_uri(display_rgb(img, ds.bands)), f"{r}. {t.scene} x={t.x} y={t.y}", width=160))
    meta = (f"{obj['budget']} of {obj['candidates']} train tiles, strategy {obj['strategy']}, "
            f"features: {obj['features']['summary']} of {obj['features']['init']}")
    body = ('<p>Label these tiles, in this order (the first ones matter most); each is named by its scene '
            'and pixel window in the prepared data set.</p><div class="figs">' + "".join(figs) + "</div>")
    return document(f"Tiles to label: {html.escape(Path(obj['data']).name)}", body, meta=html.escape(meta))


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet select``."""
    parser.add_argument("--ckpt", required=True, help="whose features choose: a pretraining run, pretrained.pt, "
                        "model.pt, or none (a random network)")
    parser.add_argument("--data", required=True, help="prepared data set")
    parser.add_argument("--budget", required=True, help="tiles to label: a percentage of the train tiles (1%%, the "
                        "size of prepare's subset of that fraction) or a count")
    parser.add_argument("--strategy", default="typiclust", choices=list(STRATEGIES),
                        help="typiclust (default: typical tiles of as many clusters), kcenter, probcover, random")
    parser.add_argument("--features", default="style", choices=["style", "mean", "layout"],
                        help="how a tile's ASPP map becomes a vector (default style: channel means and deviations)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the strategy (and of the network for --ckpt none)")
    parser.add_argument("--out", required=True, metavar="FILE.json", help="the subset file (FILE.html: its page)")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE.json written by an earlier select")


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet select``; returns the exit status."""
    run(args.ckpt, args.data, args.budget, args.strategy, args.out, args.features, args.seed,
        overwrite=args.overwrite)
    print(f"{args.out}\n{Path(args.out).with_suffix('.html')}")
    return 0
