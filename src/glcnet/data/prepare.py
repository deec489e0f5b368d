"""``prepare``: raw data set folder -> prepared folder (format in docs/design.md).

Steps: discover scenes -> check every header (band count, sizes, dtype, tile size) before
any heavy work -> split scenes -> per scene write ``images/<scene>.npy`` (raw values),
``masks/<scene>.npy`` (decoded indices), ``eval_masks/`` when eroded labels exist ->
tile windows, labelled subsets, statistics -> ``dataset.json``, ``tiles.csv``,
``splits.json``. Everything is written in a temporary folder renamed at the end, so a
failure never leaves a half-written output.

Statistics: ``value_range`` per band is ``[0, 255]`` for uint8 bands, else the 0.5th and
99.5th percentiles over the train scenes (sampled); ``mean``/``std`` are over the scaled
train pixels; ``class_counts`` are pixel counts per class over whole scenes per split.

No-data: a pixel is no-data where a band holds its nodata value (``--nodata V`` for every
band, else the GeoTIFF nodata tag of each image) or a non-finite value. No-data is left out
of every statistic, its mask label is 255 (so it leaves losses and metrics), the stored
image keeps the data set's nodata value (``dataset.json`` ``nodata``), and scaling maps it
to 0 (:func:`glcnet.data.raster.scale`). A float band without a declared nodata value whose
minimum or maximum looks like a fill (-9999, -3.4e38: many pixels, far outside the other
values) is a warning that names the file, the band and ``--nodata VALUE``.

Labels are checked as a whole at the end: a class without a single pixel is a warning;
index masks that hold only 0 and 255 (binary masks read without ``--mask-threshold``, so
that the ignore value swallows the second class) are an error.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import glob
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from glcnet import outputs
from glcnet.data.formats import Format, Source, default_colors, get_format
from glcnet.data.raster import RASTER_SUFFIXES, check_aligned, invalid, probe, scale
from glcnet.data.splits import ALL_SPLITS, DEFAULT_FRACTIONS, SPLITS, assign_splits, labelled_subsets, tile_windows
from glcnet.errors import GlcnetError
from glcnet.utils.atomic import save_npy, write_json
from glcnet.utils.progress import bar, duration

log = logging.getLogger("glcnet.data")
VERSION = 1
_PERCENTILE_SAMPLES = 1_000_000  # pixels per scene and band for the percentile estimate


def prepare(fmt: str, src: str | Path, out: str | Path, *, tile_size: int = 256, stride: int | None = None,
            seed: int = 0, overwrite: bool = False, split_ratios: Sequence[float] = (0.6, 0.2, 0.2),
            split_file: str | Path | None = None, val_scenes: Sequence[str] | None = None,
            fractions: Sequence[float] = DEFAULT_FRACTIONS, unlabeled: str | Path | None = None,
            select_bands: Sequence[str] | None = None, name: str | None = None, nodata: float | None = None,
            **format_options: Any) -> Path:
    """Prepare ``src`` (format ``fmt``) into ``out``; returns ``out``.

    ``format_options`` go to the format class (e.g. ``labels="eroded"``, ``dsm=True``,
    ``classes=[...]``, ``bands=[...]``, ``legend=FILE``, ``reduce_zero_label=True``,
    ``mask_threshold=128``); an option the format does not know is an error. ``nodata``: the
    no-data value of every band (default: each image's GeoTIFF nodata tag).
    """
    src, out = Path(src), Path(out)
    stride = stride or tile_size
    if tile_size < 1 or stride < 1:
        raise GlcnetError(f"tile size {tile_size} and stride {stride} must be positive")
    if not src.is_dir():
        raise GlcnetError(f"{src}: source folder not found")
    inputs = [src, unlabeled, split_file, format_options.get("legend")]
    outputs.check(out, "prepare", overwrite=overwrite, inputs=inputs)
    f = get_format(fmt, **format_options)
    sources = f.discover(src) + _unlabeled_sources(unlabeled)
    _check_names(sources)
    shapes, bands, band_dtypes, dtype, tags = _preflight(f, sources, tile_size)
    sel = _select(bands, select_bands, sources[0].image)
    bands, band_dtypes = [bands[i] for i in sel], [band_dtypes[i] for i in sel]
    if nodata is not None and np.isfinite(nodata):
        if not _holds(dtype, nodata):
            raise GlcnetError(f"--nodata {nodata:g}: not a value of the images' dtype {np.dtype(dtype)}")
        nodata = float(np.asarray(nodata).astype(dtype))  # -3.4028235e+38 -> the float32 fill itself
    first_tag = tags[sources[0].name]
    ds_nodata = None if nodata is None and all(v is None for v in first_tag) else \
        [nodata if nodata is not None else first_tag[i] for i in sel]
    splits = assign_splits({s.name: (s.split, s.mask is not None) for s in sources}, seed=seed,
                           ratios=split_ratios, split_file=split_file, val_scenes=val_scenes,
                           default_val=f.default_val)
    order = {s: i for i, s in enumerate(ALL_SPLITS)}
    sources.sort(key=lambda s: (order[splits[s.name]], s.name))

    _remove_leftovers(out)
    with outputs.new_folder(out, "prepare", overwrite=overwrite, inputs=inputs) as tmp, _held(tmp):
        for d in ("images", "masks"):
            (tmp / d).mkdir()
        scenes: list[dict[str, Any]] = []
        tiles: list[tuple[int, str, str, int, int, int, int]] = []  # rows of tiles.csv
        counts = {s: np.zeros(256, np.int64) for s in SPLITS}
        has_label: list[int] = []
        fills: dict[tuple[str, float], list[tuple[Path, float, float, float]]] = {}  # (band, value) -> files
        t0, pixels = time.monotonic(), sum(h * w for h, w in shapes.values())
        progress = bar(pixels, "prepare", unit="px", unit_scale=True)
        for i, s in enumerate(sources):
            split = splits[s.name]
            h, w = shapes[s.name]
            progress.set_postfix_str(s.name)
            log.debug("[%d/%d] %s (%s, %dx%d)", i + 1, len(sources), s.name, split, w, h)
            image, meta = f.read_image(s)
            image = np.ascontiguousarray(image[sel].astype(dtype, copy=False))  # [C, H, W]
            tag = [tags[s.name][i] for i in sel] if nodata is None else [nodata] * len(sel)
            origin = [s.image] * (len(tags[s.name]) - len(s.extra)) + list(s.extra)  # file of each band
            for b in range(len(sel)):
                found = _fill_value(image[b]) if image.dtype.kind == "f" and tag[b] is None else None
                if found:
                    fills.setdefault((bands[b], found[0]), []).append((origin[sel[b]], *found[1:]))
            bad = invalid(image, tag).any(0)  # [H, W] no-data in any band
            if ds_nodata is not None and tag != ds_nodata:  # this scene's own tag -> the data set's value
                for b, v in enumerate(ds_nodata):
                    if v is not None:
                        image[b, bad] = v
            save_npy(tmp / "images" / f"{s.name}.npy", image)
            del image
            mask = f.read_mask(s.mask) if s.mask else None
            if mask is not None:
                mask[bad] = 255  # no-data pixels leave losses and metrics
                save_npy(tmp / "masks" / f"{s.name}.npy", mask)
                if split in counts:
                    counts[split] += np.bincount(mask.ravel(), minlength=256)
            if s.eval_mask:
                (tmp / "eval_masks").mkdir(exist_ok=True)
                save_npy(tmp / "eval_masks" / f"{s.name}.npy", f.read_eval_mask(s.eval_mask))
            for x, y in tile_windows(h, w, tile_size, stride):
                tid = len(tiles)
                tiles.append((tid, s.name, split, x, y, tile_size, tile_size))
                if split == "train" and mask is not None and (mask[y:y + tile_size, x:x + tile_size] != 255).any():
                    has_label.append(tid)
            scenes.append({"name": s.name, "split": split, "height": h, "width": w,
                           "crs": meta["crs"], "transform": meta["transform"],
                           "source_image": str(s.image), "source_mask": str(s.mask) if s.mask else None,
                           "has_mask": mask is not None, "has_eval_mask": s.eval_mask is not None})
            del mask
            progress.update(h * w)
        progress.close()
        tiled_s = time.monotonic() - t0
        _warn_fills(fills, dtype)

        classes = f.final_classes()
        k = len(classes)
        if k == 0 or k > 255:
            raise GlcnetError(f"{src}: {k} classes found; expected 1..255 (give --classes)")
        stat_names = [s["name"] for s in scenes if s["split"] == "train"] or [s["name"] for s in scenes]
        arrays = [np.load(tmp / "images" / f"{n}.npy", mmap_mode="r") for n in stat_names]
        value_range = _value_range(arrays, band_dtypes, ds_nodata)
        mean, std = _mean_std(arrays, value_range, ds_nodata)
        del arrays
        _check_labels(f, src, classes, counts)
        log.info("prepare: %d scenes (%.1f Mpx) read, decoded and tiled in %s", len(sources), pixels / 1e6,
                 duration(tiled_s))
        subsets = labelled_subsets(has_label, fractions, seed)
        colors = [list(c) for c in f.colors] if len(f.colors) == k else default_colors(k)
        write_json(tmp / "dataset.json", {
            "version": VERSION, "name": name or (fmt if fmt != "generic" else src.resolve().name),
            "format": fmt, "bands": list(bands), "dtype": str(np.dtype(dtype)),
            "classes": list(classes), "colors": colors, "ignore_index": 255,
            "value_range": value_range, "mean": mean, "std": std, "nodata": ds_nodata,
            "class_counts": {sp: c[:k].tolist() for sp, c in counts.items()},
            "tile_size": tile_size, "stride": stride, "seed": seed, "source": str(src),
            "scenes": scenes})
        with open(tmp / "tiles.csv", "w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["tile_id", "scene", "split", "x", "y", "width", "height"])
            wr.writerows(tiles)
        write_json(tmp / "splits.json", {
            "seed": seed,
            "scenes": {sp: [s["name"] for s in scenes if s["split"] == sp] for sp in ALL_SPLITS},
            "labelled": subsets})
    return out


def _warn_fills(fills: dict[tuple[str, float], list[tuple[Path, float, float, float]]], dtype: Any) -> None:
    """One warning line per band and suspected undeclared no-data value (:func:`_fill_value`)."""
    for (band, value), where in fills.items():
        path, share, lo, hi = where[0]
        text = f"{value:g}" if np.asarray(float(f"{value:g}"), dtype) == value else str(np.asarray(value, dtype))
        more = f" (and {len(where) - 1} other file(s))" if len(where) > 1 else ""
        log.warning(f"warning: {path}{more}: band {band} has {share:.1%} of its pixels at {text}, far outside "
                    f"its other values {lo:g}..{hi:g}; they enter the statistics as data: if {text} means "
                    f"no-data, --nodata={text} declares it")


@contextlib.contextmanager
def _held(folder: Path) -> Iterator[None]:
    """Hold a ``flock`` on ``folder`` for the block (where the file system has locks), so that no other
    prepare takes it for the leftover of a killed run (:func:`_remove_leftovers`), from any machine."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process
        return True
    return True


def _remove_leftovers(out: Path) -> None:
    """Remove the temporary folders (``.OUT.tmp-*`` beside ``out``, :func:`glcnet.outputs.new_folder`) of
    earlier prepare runs into ``out`` that were killed before they finished (SIGKILL, the OOM killer):
    only those whose marker names glcnet prepare and a process that is gone, and that no process holds
    (:func:`_held`). One line for each."""
    for p in sorted(out.parent.glob(f".{glob.escape(out.name)}.tmp-*")):
        try:
            mark = json.loads((p / outputs.MARKER).read_text()) if p.is_dir() and not p.is_symlink() else {}
        except (OSError, ValueError):
            continue
        pid = mark.get("pid") if isinstance(mark, dict) and mark.get("kind") == "prepare" else None
        if not isinstance(pid, int) or _alive(pid):
            continue
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a prepare on another machine is writing it
            continue
        except OSError:  # no locks on this file system: the process check alone
            pass
        finally:
            os.close(fd)
        shutil.rmtree(p, ignore_errors=True)
        log.info(f"prepare: removed {p}, left by an earlier glcnet prepare (pid {pid}) that was stopped "
                 "before it finished")


def _unlabeled_sources(folder: str | Path | None) -> list[Source]:
    """Every raster in ``folder`` as an image without mask (split ``unlabeled``)."""
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise GlcnetError(f"{folder}: unlabeled folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
    if not files:
        raise GlcnetError(f"{folder}: no images found in the unlabeled folder")
    return [Source(p.stem, p, split="unlabeled") for p in files]


def _check_names(sources: list[Source]) -> None:
    seen: dict[str, Path] = {}
    for s in sources:
        if s.name in seen:
            raise GlcnetError(f"{s.image}: duplicate scene name {s.name!r} (also {seen[s.name]})")
        seen[s.name] = s.image


def _preflight(f: Format, sources: list[Source], tile: int):
    """Read every header once: band count/names, sizes, dtypes, masks on their image's pixels (size,
    CRS, geotransform), tile size; fail fast.

    Returns ``({scene: (H, W)}, band names, per-band dtypes, stored dtype, {scene: per-band nodata tag})``.
    """
    shapes, bands, band_dtypes, dtype, tags = {}, None, None, None, {}
    for s in sources:
        info = probe(s.image)
        h, w = info["height"], info["width"]
        names = f.band_names(info["count"], s.image, len(s.extra))
        dts = [info["dtype"]] * info["count"]
        tags[s.name] = list(info["nodata"])
        for p in s.extra:
            e = probe(p)
            if e["count"] != 1 or (e["height"], e["width"]) != (h, w):
                raise GlcnetError(f"{p}: is {e['count']} band(s) {e['width']}x{e['height']}, expected "
                                  f"1 band {w}x{h} like {s.image}")
            dts.append(e["dtype"])
            tags[s.name].append(e["nodata"][0])
        for label in (s.mask, s.eval_mask):
            if label is not None:
                m = probe(label)
                if (m["height"], m["width"]) != (h, w):
                    raise GlcnetError(f"{label}: mask is {m['width']}x{m['height']} but image {s.image.name} "
                                      f"is {w}x{h}")
                check_aligned(label, m, s.image, info)
        if tile > h or tile > w:
            raise GlcnetError(f"{s.image}: scene {s.name} is {w}x{h}, smaller than the tile size {tile}")
        dt = np.result_type(*dts)
        if dtype is None:
            bands, band_dtypes, dtype = names, dts, dt
        elif dt != dtype:
            raise GlcnetError(f"{s.image}: dtype {dt} differs from {dtype} of {sources[0].image.name}")
        shapes[s.name] = (h, w)
    assert bands is not None and band_dtypes is not None  # discover() found at least one scene
    return shapes, list(bands), band_dtypes, dtype, tags


def _holds(dtype: Any, value: float) -> bool:
    """True when pixels of ``dtype`` can hold ``value`` (a float type: within its range, so that the
    float32 fill -3.4028235e+38 is one; an integer type: exactly)."""
    if np.dtype(dtype).kind == "f":
        with np.errstate(over="ignore"):
            return bool(np.isfinite(np.asarray(value).astype(dtype)))
    return bool(np.can_cast(np.min_scalar_type(value), dtype))


def _fill_value(band: np.ndarray) -> tuple[float, float, float, float] | None:
    """An undeclared no-data fill in a float band ``[H, W]`` (sampled): its minimum or maximum, held by
    at least 0.1% of the finite pixels and farther from the other values than 10 times their spread
    (-9999 among reflectances 0..1, -3.4e38 among heights). Returns ``(value, share, lo, hi)`` with
    ``lo..hi`` the other values, or None."""
    step = max(1, int(np.sqrt(band.size / _PERCENTILE_SAMPLES)))
    v = band[::step, ::step].ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    for x in (v.min(), v.max()):
        hit = v == x
        share = float(hit.mean())
        if not 0.001 <= share < 1:
            continue
        rest = v[~hit]
        lo, hi = float(rest.min()), float(rest.max())
        if hi > lo and min(abs(float(x) - lo), abs(float(x) - hi)) > 10 * (hi - lo):
            return float(x), share, lo, hi
    return None


def _select(bands: list[str], select: Sequence[str] | None, path: Path) -> list[int]:
    """Band indices for ``--select-bands`` names (all bands when None)."""
    if not select:
        return list(range(len(bands)))
    missing = [b for b in select if b not in bands]
    if missing:
        raise GlcnetError(f"{path}: no band {missing[0]!r} to select (bands: {','.join(bands)})")
    return [bands.index(b) for b in select]


def _value_range(arrays: list[np.ndarray], band_dtypes: list[str],
                 nodata: Sequence[float | None] | None = None) -> list[list[float]]:
    """Per band ``[lo, hi]``: uint8 -> [0, 255]; else 0.5/99.5 percentiles of sampled pixels
    that are not no-data."""
    out = []
    for b, dt in enumerate(band_dtypes):
        if np.dtype(dt) == np.uint8:
            out.append([0.0, 255.0])
            continue
        samples = []
        nd = None if nodata is None else nodata[b]
        for a in arrays:
            step = max(1, int(np.sqrt(a.shape[1] * a.shape[2] / _PERCENTILE_SAMPLES)))
            v = np.asarray(a[b, ::step, ::step], dtype=np.float64).ravel()
            samples.append(v[np.isfinite(v) & (v != nd)] if nd is not None else v[np.isfinite(v)])
        v = np.concatenate(samples)
        lo, hi = np.percentile(v, [0.5, 99.5]) if v.size else (0.0, 1.0)
        out.append([float(lo), float(hi) if hi > lo else float(lo) + 1.0])
    return out


def _mean_std(arrays: list[np.ndarray], value_range: list[list[float]],
              nodata: Sequence[float | None] | None = None, rows: int = 256):
    """Mean and std per band of the scaled pixels of ``arrays`` that are not no-data (streamed in row blocks)."""
    c = len(value_range)
    s1, s2, n = np.zeros(c), np.zeros(c), np.zeros(c)
    for a in arrays:
        for y in range(0, a.shape[1], rows):
            raw = np.asarray(a[:, y:y + rows])
            x = scale(raw, value_range).reshape(c, -1)  # [C, rows*W]
            ok = ~invalid(raw, nodata).reshape(c, -1)  # [C, rows*W]
            s1 += (x * ok).sum(1, dtype=np.float64)
            s2 += (np.square(x, dtype=np.float64) * ok).sum(1)
            n += ok.sum(1)
    mean = s1 / np.maximum(n, 1)
    std = np.sqrt(np.maximum(s2 / np.maximum(n, 1) - mean ** 2, 0.0))
    return mean.tolist(), std.tolist()


def _check_labels(f: Format, src: Path, classes: Sequence[str], counts: dict[str, np.ndarray]) -> None:
    """Labels that decode to a wrong data set: an error where it is certain, a warning where it is suspicious."""
    total: np.ndarray = np.sum(list(counts.values()), axis=0)  # [256] pixels per label value over the labelled splits
    if not total.any():
        return
    labelled = np.flatnonzero(total[:255])
    if (f.name == "generic" and not f.opts.get("legend") and f.opts.get("mask_threshold") is None
            and total[255] > 0 and labelled.tolist() == [0]):
        raise GlcnetError(f"{src}: the masks hold only the values 0 and 255, and 255 means 'ignore', so every "
                          "non-zero pixel would be ignored; binary 0/255 masks need --mask-threshold 128")
    for i, name in enumerate(classes):
        if total[i] == 0:
            log.warning(f"warning: class {name!r} has no labelled pixel in any mask (check --classes, --legend, "
                        "--mask-threshold)")
        elif counts["train"][i] == 0:
            log.warning(f"warning: class {name!r} has no labelled pixel in the train scenes")
