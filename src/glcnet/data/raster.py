"""Raster readers (GeoTIFF, PNG, JPEG via rasterio) and the one scaling convention.

Every reader returns arrays in ``[C, H, W]`` order with the file's native dtype and turns
any read problem into a one-line :class:`~glcnet.errors.GlcnetError` naming the file.
Georeferencing (CRS as WKT, affine transform ``(a, b, c, d, e, f)``) is returned as
metadata; files without it (plain PNG/JPEG) give ``None``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glcnet.errors import GlcnetError

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def open_raster(path: str | Path) -> DatasetReader:
    """``rasterio.open(path)`` or a one-line error (missing, not a raster, corrupt header).

    PNG/JPEG without georeferencing open silently (no ``NotGeoreferencedWarning``).
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    path = Path(path)
    if not path.is_file():
        raise GlcnetError(f"{path}: file not found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except Exception as e:  # rasterio raises RasterioIOError for non-rasters
            raise GlcnetError(f"{path}: cannot read raster ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _check_png(path: Path) -> None:
    """GDAL's PNG driver returns zeros for a truncated file; Pillow's CRC check catches it."""
    if path.suffix.lower() != ".png":
        return
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:
        raise GlcnetError(f"{path}: corrupt PNG ({_first_line(e)})") from None


def probe(path: str | Path) -> dict[str, Any]:
    """Header only: ``{"count", "height", "width", "dtype", "nodata", "crs", "transform"}`` (cheap, for
    early checks); ``nodata`` is the GeoTIFF nodata value of each band (None where it has none),
    ``crs`` a ``rasterio.crs.CRS`` and ``transform`` an ``Affine``, each None where the file has none."""
    path = Path(path)
    with open_raster(path) as src:
        return {"count": src.count, "height": src.height, "width": src.width, "dtype": src.dtypes[0],
                "nodata": list(src.nodatavals), "crs": src.crs or None,
                "transform": None if src.transform.is_identity else src.transform}


def check_aligned(mask: Path, m: dict[str, Any], image: Path, i: dict[str, Any]) -> None:
    """A mask must lie on its image's pixels: where both are georeferenced (:func:`probe` headers
    ``m`` and ``i``, same size), the same CRS and a geotransform that puts every corner within half
    a pixel of the image's. A mask without georeferencing is taken as aligned."""
    if m["crs"] is not None and i["crs"] is not None and m["crs"] != i["crs"]:
        raise GlcnetError(f"{mask}: mask CRS {_short(m['crs'])} differs from CRS {_short(i['crs'])} of its "
                          f"image {image}; the labels would not cover the image's ground")
    if m["transform"] is None or i["transform"] is None:
        return
    h, w = i["height"], i["width"]
    pixel = max(abs(i["transform"].a), abs(i["transform"].e), 1e-12)
    far = max(np.hypot(*np.subtract(m["transform"] @ c, i["transform"] @ c)) for c in ((0, 0), (w, 0), (0, h), (w, h)))
    if far > pixel / 2:
        raise GlcnetError(f"{mask}: mask geotransform {tuple(m['transform'])[:6]} differs from "
                          f"{tuple(i['transform'])[:6]} of its image {image} (up to {far / pixel:.3g} pixels "
                          "apart); the labels would not lie on the image's pixels")


def _short(crs: Any) -> str:
    text = crs.to_string()
    return text if len(text) <= 60 else text[:57] + "..."


def read_raster(path: str | Path, bands: Sequence[int] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read bands (0-based indices, in the given order; default all) as ``[C, H, W]``.

    Returns ``(array, meta)`` with ``meta = {"crs": WKT | None, "transform": 6-tuple | None,
    "descriptions": [str | None per band read], "dtype": str}``. A 4th TIFF sample marked
    "alpha" is read like any band (the Potsdam RGBIR tiles store NIR there).
    """
    path = Path(path)
    with open_raster(path) as src:
        _check_png(path)
        idx = list(range(src.count)) if bands is None else list(bands)
        bad = [b for b in idx if not 0 <= b < src.count]
        if bad:
            raise GlcnetError(f"{path}: has {src.count} bands, cannot read band index {bad[0]}")
        if len(set(src.dtypes)) > 1:
            raise GlcnetError(f"{path}: bands have different dtypes {sorted(set(src.dtypes))}")
        try:
            arr = src.read([b + 1 for b in idx])  # [C, H, W]
        except Exception as e:
            raise GlcnetError(f"{path}: cannot read raster data ({_first_line(e)})") from None
        georef = src.crs is not None or not src.transform.is_identity
        meta = {
            "crs": src.crs.to_wkt() if src.crs else None,
            "transform": list(src.transform)[:6] if georef else None,
            "descriptions": [src.descriptions[b] for b in idx],
            "dtype": str(arr.dtype),
        }
    return arr, meta


def read_mask(path: str | Path, colors: bool = False) -> np.ndarray:
    """Label image: 1 band -> index mask ``[H, W]``; 3 bands (or RGB + alpha) -> colours ``[3, H, W]``.

    ``colors``: the caller decodes colours, so a palette image (1 band of indices into a
    colour table, a common PNG encoding of colour masks) is expanded to its colours.
    """
    path = Path(path)
    arr, _ = read_raster(path)
    if colors and arr.shape[0] in (1, 2):
        lut = _palette(path)
        if lut is not None:
            return lut[:, arr[0]]  # [3, H, W]
    if arr.shape[0] in (1, 2):  # gray (+ alpha)
        return arr[0]
    if arr.shape[0] in (3, 4):  # RGB (+ alpha)
        return arr[:3]
    raise GlcnetError(f"{path}: label image has {arr.shape[0]} bands, expected 1 (indices) or 3 (colours)")


def _palette(path: Path) -> np.ndarray | None:
    """The colour table of a 1-band palette raster as ``uint8 [3, 256]``, or None."""
    from rasterio.enums import ColorInterp

    with open_raster(path) as src:
        if src.colorinterp[0] != ColorInterp.palette:
            return None
        try:
            cmap = src.colormap(1)
        except ValueError:
            return None
    lut = np.zeros((3, 256), np.uint8)
    for i, c in cmap.items():
        if 0 <= i < 256:
            lut[:, i] = c[:3]
    return lut


def invalid(raw: np.ndarray, nodata: Sequence[float | None] | None) -> np.ndarray:
    """``[C, ...]`` -> ``bool [C, ...]``: the band's nodata value, or not finite (NaN no-data)."""
    bad = ~np.isfinite(raw) if raw.dtype.kind == "f" else np.zeros(raw.shape, bool)
    for b, v in enumerate(nodata or []):
        if v is not None and np.isfinite(v):
            bad[b] |= raw[b] == v
    return bad


def scale(raw: np.ndarray, value_range: Sequence[Sequence[float]],
          nodata: Sequence[float | None] | None = None) -> np.ndarray:
    """Per-band scaling to [0, 1]: ``clip((raw - lo) / (hi - lo), 0, 1)`` as float32.

    ``raw`` is ``[C, ...]``; ``value_range`` is ``[[lo, hi]] * C`` (dataset.json).
    No-data (each band's ``nodata`` value, and non-finite values such as NaN) becomes 0,
    like values below ``lo``, so that it never reaches a network as NaN or as -9999.
    """
    vr = np.asarray(value_range, dtype=np.float32)  # [C, 2]
    if raw.shape[0] != len(vr):
        raise GlcnetError(f"image has {raw.shape[0]} bands but the value range has {len(vr)}")
    shape = (len(vr),) + (1,) * (raw.ndim - 1)
    lo = vr[:, 0].reshape(shape)
    span = np.maximum(vr[:, 1] - vr[:, 0], 1e-12).reshape(shape)
    with np.errstate(over="ignore"):  # a float32 fill such as -3.4e38 overflows to -inf, clipped to 0
        out = (raw.astype(np.float32) - lo) / span
    np.clip(out, 0.0, 1.0, out=out)
    if raw.dtype.kind not in "ui":  # integer rasters cannot hold NaN
        np.nan_to_num(out, copy=False, nan=0.0)
    if nodata is not None and any(v is not None for v in nodata):
        out[invalid(raw, nodata)] = 0.0
    return out
