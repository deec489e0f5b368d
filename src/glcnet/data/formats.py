"""Data set formats: where the scenes are on disk, their classes/colours/bands, mask decoding.

One small class per format; class attributes ``name, classes, colors, bands,
ignore_index`` describe the data set, ``discover(src)`` finds the scenes and
``read_mask(path)`` decodes a label file to ``uint8 [H, W]`` indices (255 = ignore).

Standard splits (scenes, never tiles, are split):

* ISPRS Potsdam (38 tiles of 6000x6000 px at 5 cm). Train (24): 2_10 2_11 2_12 3_10 3_11
  3_12 4_10 4_11 4_12 5_10 5_11 5_12 6_07 6_08 6_09 6_10 6_11 6_12 7_07 7_08 7_09 7_10 7_11
  7_12. Test (14): 2_13 2_14 3_13 3_14 4_13 4_14 4_15 5_13 5_14 5_15 6_13 6_14 6_15 7_13.
  Validation scenes are taken from the train list: ``--val-scenes 2_10,7_12`` or, by
  default, 2 train scenes drawn with the seed. (The reference GLCNet code selects models
  on the test scenes; we do not.)
* ISPRS Vaihingen (33 areas at 9 cm). Train (16): areas 1 3 5 7 11 13 15 17 21 23 26 28 30
  32 34 37. Test (17): 2 4 6 8 10 12 14 16 20 22 24 27 29 31 33 35 38. Validation as Potsdam.
* Other formats: split sub-folders where the layout has them, else a seeded random
  split of the scenes (``--split-ratios``), or ``--split-file``.

The five formats stay in one module (about 60 to 100 lines each) so that their discovery
rules can be read side by side; the classes do not depend on each other.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from glcnet.data.raster import RASTER_SUFFIXES, read_mask, read_raster
from glcnet.errors import GlcnetError

IGNORE = 255
POTSDAM_TRAIN = ("2_10 2_11 2_12 3_10 3_11 3_12 4_10 4_11 4_12 5_10 5_11 5_12 "
                 "6_07 6_08 6_09 6_10 6_11 6_12 7_07 7_08 7_09 7_10 7_11 7_12").split()
POTSDAM_TEST = "2_13 2_14 3_13 3_14 4_13 4_14 4_15 5_13 5_14 5_15 6_13 6_14 6_15 7_13".split()
VAIHINGEN_TRAIN = [int(a) for a in "1 3 5 7 11 13 15 17 21 23 26 28 30 32 34 37".split()]
VAIHINGEN_TEST = [int(a) for a in "2 4 6 8 10 12 14 16 20 22 24 27 29 31 33 35 38".split()]
ISPRS_CLASSES = ("impervious", "building", "low_vegetation", "tree", "car", "clutter")
ISPRS_COLORS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
BLACK = (0, 0, 0)


@dataclass
class Source:
    """One scene on disk: its image, optional label files, extra single-band rasters (DSM)."""

    name: str
    image: Path
    mask: Path | None = None
    eval_mask: Path | None = None  # eroded ("noBoundary") labels -> ISPRS-convention eval mask
    extra: list[Path] = field(default_factory=list)
    split: str | None = None  # known split (official list or folder name), else None


def default_colors(k: int) -> list[list[int]]:
    """Distinct display colours for ``k`` classes (hues spaced by the golden ratio)."""
    import colorsys

    return [[round(255 * v) for v in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.7, 0.95)] for i in range(k)]


# ----------------------------------------------------------------------------- decoding
def _pack(rgb: np.ndarray) -> np.ndarray:
    """[3, H, W] uint8 -> [H, W] int32 key r<<16 | g<<8 | b."""
    r, g, b = (rgb[i].astype(np.int32) for i in range(3))
    return (r << 16) | (g << 8) | b


def decode_colors(rgb: np.ndarray, colors, path: Path, ignore_colors=()) -> np.ndarray:
    """Colour mask ``[3, H, W]`` -> ``uint8 [H, W]``: ``colors[i]`` -> i, ``ignore_colors`` -> 255.

    Any other colour is an error naming the file, the colour and its pixel count.
    """
    if rgb.ndim != 3:
        raise GlcnetError(f"{path}: expected a colour (RGB) label image, got a single-band one")
    key = _pack(rgb)  # [H, W]
    out = np.full(key.shape, IGNORE, np.uint8)
    known = np.zeros(key.shape, bool)
    for i, c in enumerate(colors):
        hit = key == ((c[0] << 16) | (c[1] << 8) | c[2])
        out[hit] = i
        known |= hit
    for c in ignore_colors:
        known |= key == ((c[0] << 16) | (c[1] << 8) | c[2])
    if not known.all():
        bad = key[~known]
        k = int(bad[0])
        raise GlcnetError(f"{path}: unknown label colour {(k >> 16, (k >> 8) & 255, k & 255)} "
                          f"({int((bad == k).sum())} pixels; {int(bad.size)} unknown in all)")
    return out


def decode_index(mask: np.ndarray, path: Path, num_classes: int | None, *,
                 reduce_zero_label: bool = False, threshold: float | None = None,
                 threshold_flag: str | None = None) -> np.ndarray:
    """Index mask ``[H, W]`` -> ``uint8 [H, W]``.

    ``threshold`` T: ``mask >= T`` -> 1 else 0 (anti-aliased binary masks).
    ``reduce_zero_label``: 0 -> 255, v -> v - 1 (mmseg convention; 255 stays 255).
    Values other than 0..K-1 and 255 are an error naming the file, and so are non-integer
    values of a float mask (a probability or soft mask; ``threshold_flag``: the option that
    would binarise it, named in the error).
    """
    if mask.ndim != 2:
        raise GlcnetError(f"{path}: expected a single-band index mask, got {mask.shape[0]} bands "
                          "(colour masks need a legend)")
    if threshold is not None:
        return (mask >= threshold).astype(np.uint8)
    if mask.dtype.kind == "f":
        frac = mask[~np.isfinite(mask) | (mask != np.floor(mask))]
        if frac.size:
            use = f"give {threshold_flag} T to binarise it, or " if threshold_flag else ""
            raise GlcnetError(f"{path}: float mask holds non-integer values such as {frac[0]:g} ({frac.size} "
                              f"pixels), which would be truncated to classes; {use}store integer class values")
    m = mask.astype(np.int64)
    if reduce_zero_label:
        m = np.where((mask == 0) | (mask == IGNORE), IGNORE, m - 1)
    labelled = m[m != IGNORE]
    limit = num_classes if num_classes is not None else IGNORE
    bad = labelled[(labelled < 0) | (labelled >= limit)]
    if bad.size:
        raise GlcnetError(f"{path}: mask value {int(bad[0]) + int(reduce_zero_label)} is not a class "
                          f"(expected 0..{limit - 1 + int(reduce_zero_label)}"
                          f"{'' if reduce_zero_label else ' or 255'}; {bad.size} pixels)")
    return m.astype(np.uint8)


# ----------------------------------------------------------------------------- discovery helpers
def _rasters(folder: Path, recursive: bool = False) -> list[Path]:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
                  and not p.name.startswith("."))


def _unique(pairs: list[tuple[Any, Path]]) -> dict[Any, Path]:
    """key -> path, with an error naming both files when a key occurs twice."""
    out: dict[Any, Path] = {}
    for k, p in pairs:
        if k in out:
            raise GlcnetError(f"{p}: duplicate scene name {k!r} (also {out[k]})")
        out[k] = p
    return out


def _no_scenes(src: Path, layout: str) -> GlcnetError:
    return GlcnetError(f"{src}: no images found (expected {layout})")


def _subdir(src: Path, names: tuple[str, ...]) -> Path | None:
    return next((src / n for n in names if (src / n).is_dir()), None)


# ----------------------------------------------------------------------------- formats
class Format:
    """Base class: metadata as class attributes, options as constructor keywords."""

    name: ClassVar[str] = ""
    layout: ClassVar[str] = ""  # one line, shown in help and "no images found" errors
    classes: tuple[str, ...] = ()
    colors: tuple[tuple[int, int, int], ...] = ()
    bands: tuple[str, ...] = ()
    ignore_index: int = IGNORE
    default_val: ClassVar[int] = 0  # val scenes drawn from train when a known split has none
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join("--" + o.replace("_", "-") for o in self.options) or "none"
            raise GlcnetError(f"format {self.name}: option --{unknown[0].replace('_', '-')} does not apply "
                              f"(its options: {valid})")
        self.opts = {**self.options, **options}

    def discover(self, src: Path) -> list[Source]:
        raise NotImplementedError

    def band_names(self, count: int, path: Path, extra: int = 0) -> tuple[str, ...]:
        """Names of the bands of an image with ``count`` bands plus ``extra`` appended ones
        (error on a wrong count)."""
        if len(self.bands) != count + extra:
            raise GlcnetError(f"{path}: has {count} bands, expected {len(self.bands) - extra} "
                              f"({','.join(self.bands[:len(self.bands) - extra])})")
        return self.bands

    def read_image(self, s: Source) -> tuple[np.ndarray, dict[str, Any]]:
        """``[C, H, W]`` image (extra single-band rasters appended as bands) and its metadata."""
        arr, meta = read_raster(s.image)
        if s.extra:
            parts = [arr] + [read_raster(p)[0] for p in s.extra]
            dtype = np.result_type(*[a.dtype for a in parts])
            arr = np.concatenate([a.astype(dtype, copy=False) for a in parts])  # [C + E, H, W]
        return arr, meta

    def read_mask(self, path: Path) -> np.ndarray:
        """Decode a label file to ``uint8 [H, W]`` class indices (255 = ignore)."""
        raise NotImplementedError

    def read_eval_mask(self, path: Path) -> np.ndarray:
        """Labels of the format's evaluation convention (formats whose scenes have ``eval_mask``)."""
        raise NotImplementedError

    def final_classes(self) -> tuple[str, ...]:
        """Class names, known once every mask was read (generic may infer them)."""
        return tuple(self.classes)


class _ISPRS(Format):
    classes = ISPRS_CLASSES
    colors = ISPRS_COLORS
    default_val = 2

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.opts["labels"] not in ("full", "eroded"):
            raise GlcnetError(f"--labels {self.opts['labels']!r}: expected full or eroded")

    def read_mask(self, path: Path) -> np.ndarray:
        # black = boundary in the eroded ("noBoundary") variant -> ignore
        return decode_colors(read_mask(path, colors=True), self.colors, path, ignore_colors=(BLACK,))

    def read_eval_mask(self, path: Path) -> np.ndarray:
        """ISPRS convention (eroded labels): boundaries and clutter -> 255."""
        m = self.read_mask(path)
        m[m == self.classes.index("clutter")] = IGNORE
        return m

    def _pick(self, name: str, image: Path, full: Path | None, eroded: Path | None,
              split: str | None, extra: list[Path] | None = None) -> Source:
        mask = full if self.opts["labels"] == "full" else eroded
        return Source(name, image, mask, eroded, extra or [], split)


class Potsdam(_ISPRS):
    """ISPRS Potsdam: official layout or the G-RSIM example layout (``train_RGBIR/``, ``train_lbl/``)."""

    name = "potsdam"
    layout = ("4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif + 5_Labels_all/top_potsdam_2_10_label.tif "
              "(or train_RGBIR/ + train_lbl/)")
    options = {"labels": "full", "imagery": "RGBIR"}
    IMAGERY = {"RGB": ("R", "G", "B"), "RGBIR": ("R", "G", "B", "NIR"), "IRRG": ("NIR", "R", "G")}
    _OFFICIAL = re.compile(r"top_potsdam_(\d+_\d+)_(RGB|RGBIR|IRRG|label|label_noBoundary)\.tiff?$", re.I)
    _GRSIM = re.compile(r"(train|val|test)_(RGB|RGBIR|IRRG|lbl)$", re.I)

    def __init__(self, **options: Any):
        super().__init__(**options)
        imagery = str(self.opts["imagery"]).upper()
        if imagery not in self.IMAGERY:
            raise GlcnetError(f"--imagery {self.opts['imagery']!r}: expected one of {', '.join(self.IMAGERY)}")
        self.imagery = imagery
        self.bands = self.IMAGERY[imagery]

    def discover(self, src: Path) -> list[Source]:
        grsim = [d for d in sorted(src.iterdir()) if d.is_dir() and self._GRSIM.match(d.name)]
        sources = self._grsim(grsim) if grsim else self._official(src)
        if not sources:
            raise _no_scenes(src, self.layout)
        return sources

    def _grsim(self, dirs: list[Path]) -> list[Source]:
        out = []
        for d in dirs:
            m = self._GRSIM.match(d.name)
            assert m is not None  # discover() chose the folders by this pattern
            split, kind = m.groups()
            if kind.upper() != self.imagery:
                continue
            lbl = d.with_name(f"{split}_lbl")
            for p in _rasters(d):
                mask = lbl / p.name
                out.append(Source(p.stem, p, mask if mask.is_file() else None, None, [], split.lower()))
        return out

    def _official(self, src: Path) -> list[Source]:
        found = [(self._OFFICIAL.match(p.name), p) for p in _rasters(src, recursive=True)]
        files = _unique([((m.group(1), m.group(2).lower()), p) for m, p in found if m])
        out = []
        for (sid, kind), p in files.items():
            if kind == self.imagery.lower():
                split = "train" if sid in POTSDAM_TRAIN else "test" if sid in POTSDAM_TEST else None
                out.append(self._pick(f"top_potsdam_{sid}", p, files.get((sid, "label")),
                                      files.get((sid, "label_noboundary")), split))
        return out


class Vaihingen(_ISPRS):
    """ISPRS Vaihingen: IRRG ``top_mosaic_09cm_areaN.tif``, labels, optional DSM band."""

    name = "vaihingen"
    layout = ("top/top_mosaic_09cm_area1.tif + gts_for_participants/top_mosaic_09cm_area1.tif "
              "[+ dsm/dsm_09cm_matching_area1.tif]")
    options = {"labels": "full", "dsm": False}
    bands: tuple[str, ...] = ("NIR", "R", "G")
    _TOP = re.compile(r"top_mosaic_09cm_area(\d+)(_noBoundary)?\.tiff?$", re.I)
    _DSM = re.compile(r"dsm_09cm_matching_area(\d+)\.tiff?$", re.I)

    def __init__(self, **options: Any):
        super().__init__(**options)
        if self.opts["dsm"]:
            self.bands = ("NIR", "R", "G", "DSM")

    def discover(self, src: Path) -> list[Source]:
        found: dict[str, list[tuple[int, Path]]] = {"images": [], "labels": [], "eroded": [], "dsm": []}
        for p in _rasters(src, recursive=True):
            if m := self._DSM.match(p.name):
                found["dsm"].append((int(m.group(1)), p))
            elif m := self._TOP.match(p.name):
                folder = p.parent.name.lower()  # top/, gts_for_participants/, ..._ground_truth_COMPLETE/
                is_label = any(k in folder for k in ("gts", "ground_truth", "labels", "lbl"))
                found["eroded" if m.group(2) else "labels" if is_label else "images"].append((int(m.group(1)), p))
        images, labels, eroded, dsm = (_unique(found[k]) for k in ("images", "labels", "eroded", "dsm"))
        out = []
        for area, p in sorted(images.items()):
            extra = []
            if self.opts["dsm"]:
                if area not in dsm:
                    raise GlcnetError(f"{p}: no DSM dsm_09cm_matching_area{area}.tif found (--dsm)")
                extra = [dsm[area]]
            split = "train" if area in VAIHINGEN_TRAIN else "test" if area in VAIHINGEN_TEST else None
            out.append(self._pick(f"top_mosaic_09cm_area{area}", p, labels.get(area), eroded.get(area),
                                  split, extra))
        if not out:
            raise _no_scenes(src, self.layout)
        return out


class LoveDA(Format):
    """LoveDA: ``img_dir/`` + ``ann_dir/`` (flat or with split sub-folders) or the official
    ``Train/Urban/images_png`` + ``masks_png`` layout. Masks: 0 = no-data, 1..7 -> 0..6."""

    name = "loveda"
    layout = "img_dir/*.png + ann_dir/*.png, or Train/Urban/images_png + masks_png"
    classes = ("background", "building", "road", "water", "barren", "forest", "agriculture")
    bands = ("R", "G", "B")
    _SPLITS = {"train": "train", "val": "val", "test": "test"}

    def discover(self, src: Path) -> list[Source]:
        pairs: list[tuple[Path, Path, str | None]] = []  # (image, mask folder, split)
        if (src / "img_dir").is_dir():
            for p in _rasters(src / "img_dir", recursive=True):
                rel = p.parent.relative_to(src / "img_dir")
                split = self._SPLITS.get(rel.parts[0].lower()) if rel.parts else None
                pairs.append((p, src / "ann_dir" / rel, split))
        else:
            for d in sorted(src.rglob("images_png")):
                split = self._SPLITS.get(d.parent.parent.name.lower())
                pairs += [(p, d.with_name("masks_png"), split) for p in _rasters(d)]
        _unique([(p.stem, p) for p, _, _ in pairs])
        out = []
        for p, mdir, split in pairs:
            mask = next((mdir / (p.stem + s) for s in RASTER_SUFFIXES if (mdir / (p.stem + s)).is_file()), None)
            out.append(Source(p.stem, p, mask, None, [], split))
        if not out:
            raise _no_scenes(src, self.layout)
        return out

    def read_mask(self, path: Path) -> np.ndarray:
        return decode_index(read_mask(path), path, len(self.classes), reduce_zero_label=True)


class DeepGlobe(Format):
    """DeepGlobe Land Cover: ``ID_sat.jpg`` + ``ID_mask.png`` colour masks (binarised at 128,
    as the challenge prescribes, since the PNGs are not exactly 0/255)."""

    name = "deepglobe"
    layout = "<id>_sat.jpg + <id>_mask.png (any sub-folder)"
    classes = ("urban", "agriculture", "rangeland", "forest", "water", "barren")
    colors = ((0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255))
    bands = ("R", "G", "B")

    def discover(self, src: Path) -> list[Source]:
        sats = [p for p in _rasters(src, recursive=True) if p.stem.endswith("_sat")]
        by_id = _unique([(p.stem[: -len("_sat")], p) for p in sats])
        out = []
        for sid, p in by_id.items():
            mask = p.with_name(f"{sid}_mask.png")
            out.append(Source(sid, p, mask if mask.is_file() else None))
        if not out:
            raise _no_scenes(src, self.layout)
        return out

    def read_mask(self, path: Path) -> np.ndarray:
        rgb = read_mask(path, colors=True)
        if rgb.ndim == 3:
            rgb = np.where(rgb >= 128, 255, 0).astype(np.uint8)
        return decode_colors(rgb, self.colors, path, ignore_colors=(BLACK,))


def read_legend(path: Path) -> tuple[list[str], list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Legend file -> (class names, their colours, ignored colours).

    CSV rows ``name,r,g,b[,ignore]`` (optional header), or YAML/JSON: a list of
    ``{name, color: [r, g, b], ignore: bool}`` or a mapping ``name: [r, g, b]``.
    """
    from glcnet.config import DuplicateKeyError, load_yaml

    path = Path(path)
    if not path.is_file():
        raise GlcnetError(f"{path}: legend file not found")
    entries: list[dict[str, Any]]
    try:
        if path.suffix.lower() == ".csv":
            rows = [r for r in csv.reader(path.read_text().splitlines()) if r and r[0].strip()]
            if rows and not rows[0][1].strip().isdigit():
                rows = rows[1:]  # header
            entries = [{"name": r[0].strip(), "color": [int(v) for v in r[1:4]],
                        "ignore": len(r) > 4 and r[4].strip().lower() in ("1", "true", "yes", "ignore")}
                       for r in rows]
        else:
            data = load_yaml(path.read_text())  # JSON is YAML
            if isinstance(data, dict):
                data = [{"name": k, "color": v} for k, v in data.items()]
            entries = [{"name": str(e["name"]), "color": [int(v) for v in e["color"]],
                        "ignore": bool(e.get("ignore", False))} for e in data]
        if any(len(e["color"]) != 3 or not all(0 <= v <= 255 for v in e["color"]) for e in entries):
            raise ValueError("each colour needs 3 values in 0..255")
    except DuplicateKeyError as err:  # a class given twice: which colour did the user mean?
        raise GlcnetError(f"{path}: {err}") from None
    except Exception as err:
        raise GlcnetError(f"{path}: not a valid legend ({type(err).__name__}: {err}); "
                          "expected rows name,r,g,b[,ignore]") from None
    keep = [e for e in entries if not e["ignore"]]
    if not keep:
        raise GlcnetError(f"{path}: legend has no classes")
    seen: dict[tuple[int, ...], str] = {}
    for e in entries:  # a colour must decode to one class: no two rows share a colour or a name
        c = tuple(e["color"])
        if c in seen:
            raise GlcnetError(f"{path}: colour {c} is given to both {seen[c]!r} and {e['name']!r}; "
                              "the legend cannot be decoded unambiguously")
        seen[c] = e["name"]
    names = [e["name"] for e in keep]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise GlcnetError(f"{path}: class {dup!r} is listed twice; give each class one colour")
    return ([e["name"] for e in keep], [tuple(e["color"]) for e in keep],
            [tuple(e["color"]) for e in entries if e["ignore"]])


class Generic(Format):
    """Any folder ``images/`` + ``masks/`` (also ``img_dir/ann_dir``, ``groundtruth/``),
    matched by file stem; index masks (PNG/TIFF) or colour masks with ``--legend``."""

    name = "generic"
    layout = "images/*.{tif,png,jpg} + masks/<same stem>.{png,tif}"
    options = {"classes": None, "bands": None, "legend": None, "reduce_zero_label": False,
               "mask_threshold": None}
    IMAGE_DIRS = ("images", "img_dir", "image", "imgs")
    MASK_DIRS = ("masks", "ann_dir", "labels", "groundtruth", "gt")

    def __init__(self, **options: Any):
        super().__init__(**options)
        o = self.opts
        if len([k for k in ("legend", "reduce_zero_label", "mask_threshold") if o[k] not in (None, False)]) > 1:
            raise GlcnetError("--legend, --reduce-zero-label and --mask-threshold exclude each other")
        self.ignore_colors: list = []
        if o["legend"]:
            classes, colors, self.ignore_colors = read_legend(Path(o["legend"]))
            self.classes, self.colors = tuple(classes), tuple(colors)
        elif o["classes"]:
            self.classes = tuple(o["classes"])
        elif o["mask_threshold"] is not None:
            self.classes = ("background", "foreground")
        if o["classes"] and o["legend"] and list(o["classes"]) != list(self.classes):
            raise GlcnetError(f"--classes {','.join(o['classes'])} differs from the legend {o['legend']}")
        self.bands = tuple(o["bands"]) if o["bands"] else ()
        self._max_label = -1

    def discover(self, src: Path) -> list[Source]:
        idir, mdir = _subdir(src, self.IMAGE_DIRS), _subdir(src, self.MASK_DIRS)
        if idir is None:
            raise GlcnetError(f"{src}: no images/ folder (expected {self.layout})")
        images = _unique([(p.stem, p) for p in _rasters(idir)])
        masks = _unique([(p.stem, p) for p in _rasters(mdir)]) if mdir else {}
        if not images:
            raise _no_scenes(src, self.layout)
        orphan = sorted(set(masks) - set(images))
        if orphan:
            raise GlcnetError(f"{masks[orphan[0]]}: mask has no image {orphan[0]}.* in {idir}")
        missing = sorted(set(images) - set(masks))
        if missing:
            where = mdir if mdir else src / "masks"
            raise GlcnetError(f"{images[missing[0]]}: no mask {missing[0]}.* in {where} "
                              "(images without masks go in --unlabeled DIR)")
        return [Source(k, p, masks[k]) for k, p in images.items()]

    def band_names(self, count: int, path: Path, extra: int = 0) -> tuple[str, ...]:
        if not self.bands:
            self.bands = {1: ("gray",), 3: ("R", "G", "B"), 4: ("R", "G", "B", "NIR")}.get(
                count, tuple(f"B{i + 1}" for i in range(count)))
        return super().band_names(count, path, extra)

    def read_mask(self, path: Path) -> np.ndarray:
        o = self.opts
        raw = read_mask(path, colors=bool(o["legend"]))  # palette PNGs: their colours
        if o["legend"]:
            if raw.ndim != 3:
                raise GlcnetError(f"{path}: single-band mask but --legend {o['legend']} describes colours")
            return decode_colors(raw, self.colors, path, self.ignore_colors)
        m = decode_index(raw, path, len(self.classes) or None, reduce_zero_label=o["reduce_zero_label"],
                         threshold=o["mask_threshold"], threshold_flag="--mask-threshold")
        labelled = m[m != IGNORE]
        if labelled.size:
            self._max_label = max(self._max_label, int(labelled.max()))
        return m

    def final_classes(self) -> tuple[str, ...]:
        if self.classes:
            return tuple(self.classes)
        return tuple(f"class{i}" for i in range(self._max_label + 1))


FORMATS: dict[str, type[Format]] = {f.name: f for f in (Potsdam, Vaihingen, LoveDA, DeepGlobe, Generic)}


def get_format(name: str, **options: Any) -> Format:
    """Instantiate a format by name; an unknown name lists the valid ones."""
    if name not in FORMATS:
        raise GlcnetError(f"unknown format {name!r} (valid: {', '.join(FORMATS)})")
    return FORMATS[name](**options)
