"""Reader of a prepared data set (``glcnet prepare`` output, format in docs/design.md).

``PreparedDataset(root)`` validates the folder and exposes its metadata and arrays;
``TileDataset`` yields training tiles, ``SceneDataset`` whole scenes for evaluation.
Scene arrays are memory-mapped ``.npy`` files, opened lazily in each process (the
datasets pickle without them), so DataLoader workers read only the windows they need.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from glcnet.data.raster import scale
from glcnet.data.splits import fraction_key
from glcnet.errors import GlcnetError

__all__ = ["PreparedDataset", "SceneDataset", "Tile", "TileDataset", "scale"]
_REQUIRED = ("version", "bands", "classes", "ignore_index", "value_range", "mean", "std", "scenes")


class Tile(NamedTuple):
    """One row of ``tiles.csv``: a window of a scene."""

    tile_id: int
    scene: str
    split: str
    x: int
    y: int
    width: int
    height: int


class PreparedDataset:
    """A prepared folder: ``dataset.json``, ``tiles.csv``, ``splits.json``, ``images/``, ``masks/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise GlcnetError(f"{self.root}: not a prepared data set (no dataset.json; run glcnet prepare)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
            self.split_info: dict[str, Any] = json.loads((self.root / "splits.json").read_text())
            with open(self.root / "tiles.csv", newline="") as fh:
                self._tiles = [Tile(int(r["tile_id"]), r["scene"], r["split"], int(r["x"]), int(r["y"]),
                                    int(r["width"]), int(r["height"])) for r in csv.DictReader(fh)]
        except FileNotFoundError as e:
            raise GlcnetError(f"{e.filename}: missing from the prepared data set") from None
        except (json.JSONDecodeError, KeyError, ValueError, TypeError) as e:
            raise GlcnetError(f"{self.root}: corrupt prepared data set ({type(e).__name__}: {e})") from None
        missing = [k for k in _REQUIRED if k not in self.meta]
        if missing:
            raise GlcnetError(f"{meta_path}: missing key {missing[0]!r}")
        if self.meta["version"] != 1:
            raise GlcnetError(f"{meta_path}: version {self.meta['version']} not supported (expected 1)")
        self._scenes = {s["name"]: s for s in self.meta["scenes"]}
        self._arrays: dict[tuple[str, str], np.ndarray | None] = {}

    # -- metadata
    name = property(lambda self: self.meta.get("name", self.root.name))
    classes = property(lambda self: list(self.meta["classes"]))
    colors = property(lambda self: self.meta.get("colors"))
    bands = property(lambda self: list(self.meta["bands"]))
    ignore_index = property(lambda self: int(self.meta["ignore_index"]))
    num_classes = property(lambda self: len(self.meta["classes"]))
    in_channels = property(lambda self: len(self.meta["bands"]))
    mean = property(lambda self: list(self.meta["mean"]))
    std = property(lambda self: list(self.meta["std"]))
    value_range = property(lambda self: [list(v) for v in self.meta["value_range"]])
    fractions = property(lambda self: [float(k) for k in self.split_info.get("labelled", {})])
    nodata = property(lambda self: self.meta.get("nodata"))  # per band, or None

    @property
    def identity(self) -> str:
        """What the data set is, as 8 hex digits: a hash of ``dataset.json`` and ``splits.json``
        (:func:`dataset_id`). Recorded in every run and checkpoint: a folder re-prepared in place
        (other splits, other subsets) has another identity."""
        return dataset_id(self.root)

    @property
    def is_8bit(self) -> bool:
        """True when the raw values are uint8 with value range [0, 255] on every band, so that
        ``raw / 255`` is the scaled image (loaders may then pass raw uint8 tiles on)."""
        return (self.meta.get("dtype") == "uint8" and all(list(v) == [0, 255] for v in self.value_range)
                and not any(v is not None for v in self.nodata or []))

    def scenes(self, split: str | Sequence[str] | None = None) -> list[str]:
        """Scene names of one split (or several; all when None), in file order."""
        splits = (split,) if isinstance(split, str) else split
        return [n for n, s in self._scenes.items() if splits is None or s["split"] in splits]

    def scene_info(self, scene: str) -> dict[str, Any]:
        """The scene's entry in dataset.json (size, split, CRS, transform, sources)."""
        if scene not in self._scenes:
            raise GlcnetError(f"{self.root}: no scene {scene!r}")
        return self._scenes[scene]

    def tiles(self, split: str | Sequence[str] = "train", fraction: float | None = None,
              subset_seed: int | None = None, subset: str | None = None) -> list[Tile]:
        """Tiles of the split(s); ``fraction`` keeps only a labelled subset (:meth:`labelled_ids`), and a
        subset file (``subset``, :mod:`glcnet.data.subsets`) exactly its tiles, whatever ``fraction``."""
        splits = (split,) if isinstance(split, str) else tuple(split)
        out = [t for t in self._tiles if t.split in splits]
        if subset:
            from glcnet.data.subsets import read_subset

            keep = set(read_subset(subset, self))
            out = [t for t in out if t.tile_id in keep]
        elif fraction is not None:
            keep = set(self.labelled_ids(fraction, subset_seed))
            out = [t for t in out if t.tile_id in keep]
        return out

    def labelled_ids(self, fraction: float, subset_seed: int | None = None) -> list[int]:
        """Tile ids of the labelled subset ``fraction``: the one chosen by prepare (``subset_seed`` None
        or < 0), or the same-sized nested subset that :func:`~glcnet.data.splits.labelled_subsets` draws
        with ``subset_seed`` from the same pool (train tiles with labelled pixels), e.g. one per seed."""
        subsets = self.split_info.get("labelled", {})
        key = fraction_key(fraction)
        if key not in subsets:
            raise GlcnetError(f"{self.root}: no labelled subset {key} (available: {', '.join(subsets)})")
        if subset_seed is None or subset_seed < 0:
            return list(subsets[key])
        from glcnet.data.splits import labelled_subsets

        return labelled_subsets(self.labelled_pool(), [fraction], subset_seed)[key]

    def labelled_pool(self) -> list[int]:
        """Train tiles with at least one labelled pixel (prepare's pool; its 1.0 subset when stored)."""
        if "1.0" in self.split_info.get("labelled", {}):
            return list(self.split_info["labelled"]["1.0"])
        pool = []
        for t in self._tiles:
            m = self.mask(t.scene) if t.split == "train" else None
            if m is not None and (np.asarray(m[t.y:t.y + t.height, t.x:t.x + t.width]) != 255).any():
                pool.append(t.tile_id)
        return pool

    # -- arrays
    def _array(self, kind: str, scene: str) -> np.ndarray | None:
        key = (kind, scene)
        if key not in self._arrays:
            info = self.scene_info(scene)
            absent = ((kind == "masks" and not info.get("has_mask", True))
                      or (kind == "eval_masks" and not info.get("has_eval_mask", False)))
            if absent:
                self._arrays[key] = None
            else:
                path = self.root / kind / f"{scene}.npy"
                try:
                    self._arrays[key] = np.load(path, mmap_mode="r")
                except (OSError, ValueError) as e:
                    raise GlcnetError(f"{path}: cannot read ({e})") from None
        return self._arrays[key]

    def raw(self, scene: str) -> np.ndarray:
        """Memory-mapped raw values ``[C, H, W]`` (native dtype)."""
        arr = self._array("images", scene)
        assert arr is not None  # every scene has an image
        return arr

    def image(self, scene: str) -> np.ndarray:
        """Scaled float32 ``[C, H, W]`` in [0, 1], no-data 0 (see :func:`scale`)."""
        return scale(np.asarray(self.raw(scene)), self.value_range, self.nodata)

    def mask(self, scene: str) -> np.ndarray | None:
        """uint8 ``[H, W]`` class indices (255 = ignore), memory-mapped; None for unlabeled scenes."""
        return self._array("masks", scene)

    def eval_mask(self, scene: str) -> np.ndarray | None:
        """ISPRS-convention mask (eroded boundaries and clutter -> 255) or None."""
        return self._array("eval_masks", scene)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}  # memory maps are reopened in each worker

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.root)!r}, {len(self._scenes)} scenes, {len(self._tiles)} tiles)"


def dataset_id(root: str | Path) -> str:
    """Identity of the prepared data set in ``root``: the first 8 hex digits of the SHA-1 of its
    ``dataset.json`` and ``splits.json`` (their text, as a JSON list)."""
    import hashlib

    r = Path(root)
    names = ("dataset.json", "splits.json")
    if not all((r / n).is_file() for n in names):
        raise GlcnetError(f"{root or '<data>'}: not a prepared data set (no dataset.json/splits.json; "
                          "run glcnet prepare first)")
    text = json.dumps([(r / n).read_text() for n in names], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


class TileDataset(torch.utils.data.Dataset):
    """Tiles as ``{"image": float32 [C, h, w] in [0, 1], "mask": int64 [h, w]}``.

    ``uint8``: on 8-bit data (:attr:`PreparedDataset.is_8bit`) the image is the raw uint8
    tile, meaning ``value / 255`` (a quarter of the bytes; :class:`~glcnet.transforms.ViewGenerator`
    takes it as is); other data stays float.

    ``crop``: random ``crop`` x ``crop`` window inside each tile; ``augment``: random
    horizontal/vertical flips and rotation by k*90 degrees (image and mask alike), drawn
    from torch's RNG (seeded per DataLoader worker). Unlabeled tiles get an all-255 mask.
    """

    def __init__(self, ds: PreparedDataset, splits: str | Sequence[str] = ("train",), fraction: float | None = None,
                 with_mask: bool = True, crop: int | None = None, augment: bool = False, uint8: bool = False,
                 subset_seed: int | None = None, subset: str | None = None):
        self.ds, self.with_mask, self.crop, self.augment = ds, with_mask, crop, augment
        self.uint8 = uint8 and ds.is_8bit
        self.items = ds.tiles(splits, fraction, subset_seed, subset)
        if not self.items:
            raise GlcnetError(f"{ds.root}: no tiles in split(s) {splits}"
                              + (f" for fraction {fraction}" if fraction is not None else ""))
        small = min(min(t.width, t.height) for t in self.items)
        if crop is not None and crop > small:
            raise GlcnetError(f"{ds.root}: crop {crop} is larger than the tiles ({small} px)")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = self.items[i]
        x, y, w, h = t.x, t.y, t.width, t.height
        if self.crop is not None:
            x += int(torch.randint(0, w - self.crop + 1, ()))
            y += int(torch.randint(0, h - self.crop + 1, ()))
            w = h = self.crop
        raw = np.asarray(self.ds.raw(t.scene)[:, y:y + h, x:x + w])
        scaled = raw.copy() if self.uint8 else scale(raw, self.ds.value_range, self.ds.nodata)
        image = torch.from_numpy(scaled)  # [C, h, w]
        out = {"image": image}
        if self.with_mask:
            m = self.ds.mask(t.scene)
            m = np.full((h, w), 255, np.uint8) if m is None else m[y:y + h, x:x + w]
            out["mask"] = torch.from_numpy(m.astype(np.int64))  # [h, w]
        if self.augment:
            flips = [d for d in (-1, -2) if bool(torch.rand(()) < 0.5)]
            k = int(torch.randint(0, 4, ()))
            for key, v in out.items():
                v = torch.flip(v, flips) if flips else v
                out[key] = torch.rot90(v, k, dims=(-2, -1)).contiguous()
        return out


def sample_tiles(ds: PreparedDataset, splits: Sequence[str], count: int, seed: int = 0) -> torch.Tensor:
    """``count`` tiles of ``splits`` drawn without replacement with a fixed ``seed`` (all of them when
    fewer), scaled, centre-cropped to the smallest tile side rounded down to a multiple of 16:
    ``float32 [n, C, s, s]``. The same tiles for every network that is given them (BatchNorm
    recalibration, :mod:`glcnet.models.batchnorm`)."""
    tiles = TileDataset(ds, splits=tuple(splits), with_mask=False)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(tiles), generator=g)[:count].tolist()
    side = min(min(t.width, t.height) for t in (tiles.items[i] for i in idx)) // 16 * 16
    if side < 16:
        raise GlcnetError(f"{ds.root}: tiles smaller than 16 px cannot recalibrate batch norms")
    out = []
    for i in idx:
        x = tiles[i]["image"]
        y0, x0 = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
        out.append(x[:, y0:y0 + side, x0:x0 + side])
    return torch.stack(out)


class SceneDataset(torch.utils.data.Dataset):
    """Whole scenes of one split: ``{"name", "image" [C, H, W] scaled, "mask" [H, W] int64,
    "eval_mask" [H, W] int64 (only where prepared)}``; ``mask`` is absent for unlabeled scenes."""

    def __init__(self, ds: PreparedDataset, split: str):
        self.ds, self.names = ds, ds.scenes(split)
        if not self.names:
            raise GlcnetError(f"{ds.root}: no scenes in split {split!r}")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.names[i]
        out: dict[str, Any] = {"name": name, "image": torch.from_numpy(self.ds.image(name))}
        for key, m in (("mask", self.ds.mask(name)), ("eval_mask", self.ds.eval_mask(name))):
            if m is not None:
                out[key] = torch.from_numpy(np.asarray(m, dtype=np.int64))
        return out
