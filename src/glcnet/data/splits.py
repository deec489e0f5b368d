"""Scene splits, tile windows and nested labelled subsets, all fixed by one seed.

* Splits are by scene: a scene's tiles are all in one split. Known splits (official
  lists, folder names) are kept; other labelled scenes get a seeded random split by
  ratios; scenes without a mask are ``unlabeled`` (pretraining only).
* Tiles: windows of ``tile`` px every ``stride`` px; the last row/column is aligned to
  the scene border so the whole scene is covered (:func:`window_starts`, also the
  sliding-window inference's rule).
* Labelled subsets: a seeded permutation of the train tiles that have labelled pixels;
  fraction f takes the first ``max(1, ceil(f * N))``, so smaller subsets are inside
  larger ones by construction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from glcnet.errors import GlcnetError

SPLITS = ("train", "val", "test")
ALL_SPLITS = SPLITS + ("unlabeled",)
DEFAULT_FRACTIONS = (0.01, 0.05, 0.1, 0.2, 1.0)


def fraction_key(f: float) -> str:
    """Key of a labelled subset in splits.json: ``0.01 -> "0.01"``, ``1 -> "1.0"``."""
    return str(float(f))


def split_counts(n: int, ratios: Sequence[float]) -> list[int]:
    """Scenes per split for ``n`` scenes: largest-remainder rounding of ``n * r / sum(r)``,
    then at least one scene for every split with a non-zero ratio when ``n`` allows."""
    r = np.asarray(ratios, dtype=float)
    if len(r) != 3 or (r < 0).any() or r.sum() <= 0:
        raise GlcnetError(f"--split-ratios {','.join(map(str, ratios))}: expected 3 non-negative "
                          "numbers (train,val,test) with a positive sum")
    exact = n * r / r.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((r > 0) & (counts == 0)):
        j = int(np.argmax(counts))
        if counts[j] > 1:
            counts[j] -= 1
            counts[i] += 1
    return counts.tolist()


def read_split_file(path: str | Path) -> dict[str, str]:
    """JSON ``{scene: split}`` with split in train/val/test/unlabeled."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise GlcnetError(f"{path}: split file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GlcnetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise GlcnetError(f"{path}: expected a JSON object {{scene: split}}")
    bad = {k: v for k, v in data.items() if v not in ALL_SPLITS}
    if bad:
        k = next(iter(bad))
        raise GlcnetError(f"{path}: scene {k!r} has split {bad[k]!r} (valid: {', '.join(ALL_SPLITS)})")
    return data


def _match(name: str, names: Iterable[str]) -> str:
    """A scene given by full name or by suffix (``2_10`` for ``top_potsdam_2_10``)."""
    names = list(names)
    hits = [n for n in names if n == name] or [n for n in names if n.endswith("_" + name)]
    if len(hits) != 1:
        problem = "matches no" if not hits else f"matches {len(hits)}"
        raise GlcnetError(f"--val-scenes {name!r}: {problem} train scene")
    return hits[0]


def assign_splits(scenes: dict[str, tuple[str | None, bool]], *, seed: int = 0,
                  ratios: Sequence[float] = (0.6, 0.2, 0.2), split_file: str | Path | None = None,
                  val_scenes: Sequence[str] | None = None, default_val: int = 0) -> dict[str, str]:
    """``{scene: (known split or None, has_mask)}`` -> ``{scene: split}``.

    ``split_file`` overrides everything for labelled scenes (each must be listed);
    ``val_scenes`` moves train scenes to val; else, when a known split has no val scene,
    ``default_val`` train scenes are drawn with the seed (if more train scenes remain).
    """
    out = {n: "unlabeled" for n, (_, has_mask) in scenes.items() if not has_mask}
    labelled = sorted(n for n, (_, has_mask) in scenes.items() if has_mask)
    if split_file is not None:
        given = read_split_file(split_file)
        unknown = sorted(set(given) - set(scenes))
        if unknown:
            raise GlcnetError(f"{split_file}: scene {unknown[0]!r} not found in the source folder")
        missing = [n for n in labelled if n not in given]
        if missing:
            raise GlcnetError(f"{split_file}: scene {missing[0]!r} has no split")
        out.update({n: given[n] for n in labelled})
        return out
    known = {n: split for n in labelled if (split := scenes[n][0]) is not None}
    out.update(known)
    rest = [n for n in labelled if n not in known]
    if rest:
        perm = np.random.default_rng([seed, 0]).permutation(len(rest))
        counts = split_counts(len(rest), ratios)
        bounds = np.cumsum([0] + counts)
        for i, split in enumerate(SPLITS):
            out.update({rest[j]: split for j in perm[bounds[i]: bounds[i + 1]]})
    train = sorted(n for n, s in out.items() if s == "train")
    if val_scenes:
        for v in val_scenes:
            out[_match(v, train)] = "val"
    elif known and default_val and "val" not in out.values() and len(train) > default_val:
        for j in np.random.default_rng([seed, 2]).permutation(len(train))[:default_val]:
            out[train[j]] = "val"
    return out


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis: 0, stride, 2 stride, ... and ``size - window`` last, so
    the windows cover ``0..size-1``; ``[0]`` when ``size <= window``."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def tile_windows(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners ``(x, y)`` of ``tile`` x ``tile`` windows covering the whole scene."""
    return [(x, y) for y in window_starts(height, tile, stride) for x in window_starts(width, tile, stride)]


def labelled_subsets(tile_ids: Sequence[int], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                     seed: int = 0) -> dict[str, list[int]]:
    """Nested subsets ``{fraction_key: sorted tile ids}`` of ``tile_ids`` (see module doc)."""
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise GlcnetError(f"--fractions: {bad[0]} is not in (0, 1]")
    n = len(tile_ids)
    order = [tile_ids[i] for i in np.random.default_rng([seed, 1]).permutation(n)]
    sizes = {f: (max(1, math.ceil(round(f * n, 9))) if n else 0) for f in sorted(set(fractions))}
    return {fraction_key(f): sorted(order[:k]) for f, k in sizes.items()}
