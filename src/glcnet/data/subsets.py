"""Labelled-subset files: which training tiles to label, by scene and window (``glcnet select``).

A subset file is JSON written by ``glcnet select`` (``"glcnet": "select"``)::

    {"glcnet": "select", "version": 1, "data": "/abs/prepared", "data_id": "1a2b3c4d",
     "strategy": "typiclust", "budget": 18, "seed": 0, "features": {...},
     "tiles": [{"rank": 1, "scene": "img_07", "x": 96, "y": 192, "width": 96, "height": 96}, ...]}

Tiles are named by scene and pixel window, not by row number, so a file survives re-preparing
the data set (other splits or subsets; the same tile size). :func:`read_subset` resolves them
against a prepared data set's ``tiles.csv`` and refuses, in one line naming the file, a tile
that is not there or not in the train split (its label would be used to train); fine-tuning
(``finetune.subset``) and the probe (``probe.subset``) train on exactly these tiles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glcnet.errors import GlcnetError


def read_subset(path: str | Path, ds: Any) -> list[int]:
    """Tile ids (rows of ``ds``'s ``tiles.csv``) of the subset file ``path``, in its order."""
    p = Path(path)
    try:
        obj = json.loads(p.read_text())
        tiles = obj["tiles"]
        keys = [(str(t["scene"]), int(t["x"]), int(t["y"]), int(t["width"]), int(t["height"])) for t in tiles]
    except FileNotFoundError:
        raise GlcnetError(f"{p}: subset file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GlcnetError(f"{p}: not a subset file of glcnet select ({type(e).__name__}: {e})") from None
    if obj.get("glcnet") != "select" or not keys:
        raise GlcnetError(f"{p}: not a subset file of glcnet select, or it names no tile")
    index = {(t.scene, t.x, t.y, t.width, t.height): t for t in ds.tiles(("train", "val", "test", "unlabeled"))}
    ids = []
    for key in keys:
        t = index.get(key)
        if t is None:
            raise GlcnetError(f"{p}: tile {key[0]} x={key[1]} y={key[2]} {key[3]}x{key[4]} is not a tile of "
                              f"{ds.root} (another data set, or prepared with another tile size)")
        if t.split != "train":
            raise GlcnetError(f"{p}: tile {key[0]} x={key[1]} y={key[2]} is in the {t.split} split of {ds.root}, "
                              "not train: its label cannot be trained on")
        ids.append(t.tile_id)
    if len(set(ids)) < len(ids):
        raise GlcnetError(f"{p}: names a tile twice")
    return ids
