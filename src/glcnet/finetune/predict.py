"""``glcnet predict --ckpt model.pt IN.tif... --out DIR``: georeferenced class maps of any size.

For each input raster ``IN`` it writes, atomically (temp names, renamed at the end):

    DIR/IN_pred.tif    uint8 class indices, LZW, 256x256 tiles, the input's CRS and transform,
                       a colour table and the class names in the tags
    DIR/IN_probs.tif   (--probs) uint8 class probabilities, round(255 * p), one band per class
    DIR/IN_pred.png    colour preview, downsampled so its longer side is <= 1024 px

The raster is read and written in bands of window rows (:func:`glcnet.finetune.sliding.iter_sliding`),
so memory grows with the raster width, not its area. The checkpoint carries the band
count, the dtype and raw -> [0, 1] ``value_range`` of its training data and the
normalisation, so raw rasters need nothing else. Every input is checked before anything is
written: readable, the model's band count, and values like the model's training data
(:func:`check_like_training`: same dtype, values within about the model's range), unless
``--value-range LO,HI`` says how to scale it. No-data pixels (the input's nodata tag, else
the model's) are 255 (the GeoTIFF nodata value) in ``IN_pred.tif`` and 0 in ``IN_probs.tif``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from glcnet import outputs
from glcnet.config import EvalConfig, check_values
from glcnet.data.raster import invalid, open_raster, scale
from glcnet.errors import GlcnetError
from glcnet.finetune.report import colorize
from glcnet.finetune.sliding import BLENDS, check_window, count_windows, iter_sliding
from glcnet.utils.atomic import atomic_path
from glcnet.utils.progress import bar, duration, log

if TYPE_CHECKING:
    from glcnet.models import DeepLab

PREVIEW_SIDE = 1024
GDAL_CACHE_MB = 64  # bounds GDAL's block cache so memory does not grow with the output size


def resolve_device(device: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda[:i]``; a GPU that this machine does not have is a one-line error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise GlcnetError(f"--device {device}: not a device (auto, cpu, cuda, cuda:1 ...)") from None
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        have = torch.cuda.device_count()
        raise GlcnetError(f"--device {device}: " + (f"this machine has {have} GPU(s)" if have else
                                                     "no CUDA GPU is available on this machine (use --device cpu)"))
    return dev


def parse_value_range(text: str | None, bands: int) -> list[list[float]] | None:
    """``--value-range LO,HI`` (every band) or ``LO1,HI1,LO2,HI2,...`` (one pair per band), finite numbers."""
    if text is None:
        return None
    try:
        v = [float(x) for x in text.split(",")]
    except ValueError:
        v = []
    if not all(math.isfinite(x) for x in v):  # nan/inf would scale every pixel to 0 (one class everywhere)
        raise GlcnetError(f"--value-range {text}: LO and HI must be finite numbers")
    if len(v) not in (2, 2 * bands) or any(hi <= lo for lo, hi in zip(v[::2], v[1::2])):
        raise GlcnetError(f"--value-range {text}: expected LO,HI (LO < HI) for every band, or {bands} such pairs")
    return [v[:2]] * bands if len(v) == 2 else [v[i:i + 2] for i in range(0, len(v), 2)]


def check_like_training(where: str | Path, ckpt: dict[str, Any], dtype: str,
                        observed: list[list[float]] | None) -> None:
    """Input values that the model was not trained on: another dtype, or a band whose observed
    range (e.g. 1st..99th percentile) lies far outside the model's ``value_range`` (by more than
    the range's own width). Either is a one-line error that points to ``--value-range``."""
    vr, bands = ckpt["value_range"], ckpt.get("bands") or []
    model_dtype = ckpt.get("dtype")  # absent in model.pt files of earlier versions
    ranges = ", ".join(f"{lo:g}..{hi:g}" for lo, hi in vr)
    if model_dtype and np.dtype(dtype) != np.dtype(model_dtype):
        raise GlcnetError(f"{where}: {dtype} values, but the model was trained on {model_dtype} data "
                          f"(value range {ranges}); pass --value-range LO,HI to say how to scale this input")
    for b, ((lo, hi), (olo, ohi)) in enumerate(zip(vr, observed or [])):
        span = hi - lo
        if ohi > hi + span or olo < lo - span:
            name = bands[b] if b < len(bands) else f"band {b + 1}"
            raise GlcnetError(f"{where}: band {name} has values {olo:g}..{ohi:g}, far outside the model's range "
                              f"{lo:g}..{hi:g}; pass --value-range LO,HI if this input is right")


def _observed(src: Any, nodata: list[float | None] | None, side: int = 512) -> list[list[float]]:
    """1st and 99th percentile of each band of a decimated read (at most ``side`` x ``side``), no-data left out."""
    from glcnet.data.raster import invalid

    f = max(1, math.ceil(max(src.height, src.width) / side))
    raw = src.read(out_shape=(src.count, max(1, src.height // f), max(1, src.width // f)))  # [C, h, w]
    bad = invalid(raw, nodata)
    out = []
    for b in range(raw.shape[0]):
        v = raw[b][~bad[b]].astype(np.float64)
        out.append([float(x) for x in np.percentile(v, [1, 99])] if v.size else [0.0, 0.0])
    return out


def inference_fn(model: DeepLab, device: torch.device | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x [B, C, h, w] -> logits [B, K, h, w]`` in eval mode, channels-last (about 1.8x faster on CPU)."""
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    return lambda x: model.predict_logits(x.contiguous(memory_format=torch.channels_last))


def input_nodata(src: Any, ckpt: dict[str, Any]) -> list[float | None] | None:
    """No-data of an input: its own nodata tag where it has one, else the model's training data's."""
    tags = list(src.nodatavals)
    return tags if any(v is not None for v in tags) else ckpt.get("nodata")


def check_input(path: Path, ckpt: dict[str, Any], value_range: list[list[float]] | None = None) -> None:
    """Readable raster with the model's band count and, unless ``value_range`` is given, values like
    the model's training data (:func:`check_like_training`)."""
    with open_raster(path) as src:
        if src.count != ckpt["in_channels"]:
            raise GlcnetError(f"{path}: has {src.count} bands but the model expects {ckpt['in_channels']} "
                              f"({', '.join(ckpt['bands'])})")
        if value_range is None:
            try:
                observed = _observed(src, input_nodata(src, ckpt))
            except Exception as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise GlcnetError(f"{path}: cannot read raster data ({first})") from None
            check_like_training(path, ckpt, src.dtypes[0], observed)


def outputs_of(path: Path, out_dir: Path, probs: bool) -> dict[str, Path]:
    """The files ``predict`` writes for input ``path``."""
    out = {"pred": out_dir / f"{path.stem}_pred.tif", "png": out_dir / f"{path.stem}_pred.png"}
    if probs:
        out["probs"] = out_dir / f"{path.stem}_probs.tif"
    return out


def predict_raster(model: DeepLab, ckpt: dict[str, Any], path: str | Path, out_dir: str | Path, *,
                   cfg: EvalConfig | None = None, probs: bool = False, device: torch.device | str = "cpu",
                   progress: bool = True, value_range: list[list[float]] | None = None) -> dict[str, Path]:
    """Predict one raster (see module doc); returns ``{"pred", "png"[, "probs"]}`` paths.
    ``value_range`` scales the input instead of the model's range (``--value-range``)."""
    import rasterio
    from rasterio.windows import Window


    path, out_dir, cfg = Path(path), Path(out_dir), cfg or EvalConfig()
    out = outputs_of(path, out_dir, probs)
    k, colors = len(ckpt["classes"]), ckpt["colors"]
    vr = value_range or ckpt["value_range"]
    model_fn = inference_fn(model, device)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_raster(path) as src, contextlib.ExitStack() as stack:
        h, w = src.height, src.width
        tmp = {name: stack.enter_context(atomic_path(p)) for name, p in out.items()}

        def written(failed: type[BaseException] | None, *_: Any) -> None:  # runs after the GeoTIFFs close
            if failed is None:
                _check_complete([tmp[k] for k in ("pred", "probs") if k in tmp])

        stack.push(written)  # (returns None: never swallows an error)
        nodata = input_nodata(src, ckpt)
        profile = dict(driver="GTiff", height=h, width=w, dtype="uint8", crs=src.crs, transform=src.transform,
                       compress="lzw", tiled=True, blockxsize=256, blockysize=256)
        dst = stack.enter_context(rasterio.open(tmp["pred"], "w", count=1, nodata=255, **profile))
        dst.write_colormap(1, {i: tuple(c) for i, c in enumerate(colors)})
        dst.update_tags(classes=",".join(ckpt["classes"]))
        dst_p = stack.enter_context(rasterio.open(tmp["probs"], "w", count=k, **profile)) if probs else None
        step = max(1, math.ceil(max(h, w) / PREVIEW_SIDE))
        preview = np.zeros((math.ceil(h / step), math.ceil(w / step)), np.uint8)  # [h/step, w/step]

        def read_raw(y0: int, y1: int) -> np.ndarray:
            try:
                return src.read(window=Window(0, y0, w, y1 - y0))  # [C, y1-y0, W]
            except Exception as e:
                raise GlcnetError(f"{path}: cannot read rows {y0}:{y1} ({str(e).splitlines()[0]})") from None

        def read_rows(y0: int, y1: int) -> np.ndarray:
            return scale(read_raw(y0, y1), vr, nodata)

        windows = stack.enter_context(bar(count_windows(h, w, cfg.window, cfg.stride), path.name, unit="window",
                                          enabled=progress))
        t0 = time.monotonic()
        for y0, p in iter_sliding(read_rows, h, w, model_fn, window=cfg.window, stride=cfg.stride,
                                  batch_size=cfg.batch_size, blend=cfg.blend, tta=cfg.tta, device=device,
                                  on_windows=windows.update):
            p = p.cpu()  # [K, rows, W]
            rows = p.shape[1]
            cls = p.argmax(0).to(torch.uint8).numpy()  # [rows, W]
            pu8 = (p * 255).round().to(torch.uint8).numpy() if dst_p is not None else None  # [K, rows, W]
            if nodata is not None or src.dtypes[0].startswith("float"):
                bad = invalid(read_raw(y0, y0 + rows), nodata).any(0)  # [rows, W]
                cls[bad] = 255
                if pu8 is not None:
                    pu8[:, bad] = 0
            _write(dst, cls[None], Window(0, y0, w, rows))
            if dst_p is not None and pu8 is not None:
                _write(dst_p, pu8, Window(0, y0, w, rows))
            first = -(-y0 // step) * step  # first preview row (a multiple of step) in this band
            sub = cls[first - y0 :: step, ::step]
            preview[first // step : first // step + len(sub)] = sub
        from PIL import Image

        Image.fromarray(colorize(preview, colors)).save(tmp["png"], format="PNG")
    log.info("predict %s: %dx%d px, %d windows in %s", path.name, w, h, windows.total, duration(time.monotonic() - t0))
    return out  # files closed, then renamed from their temp names, when the stack unwinds


def _not_written(path: str | Path, e: Exception) -> OSError:
    """The error of a GeoTIFF that GDAL could not write, naming it (rasterio's own says only "Write failed")."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return OSError(errno.EIO, f"GeoTIFF not written completely, is the disk full? (GDAL: {first})", str(path))


def _write(dst: Any, data: np.ndarray, window: Any) -> None:
    """``dst.write(data [bands, rows, W], window=window)``; a failure is an ``OSError`` naming the file."""
    try:
        dst.write(data, window=window)
    except Exception as e:
        raise _not_written(dst.name, e) from None


def _check_complete(paths: list[Path]) -> None:
    """Every block of each closed GeoTIFF reads back, else an ``OSError`` naming the file: GDAL writes
    its last blocks when the file closes and reports a failure there (a full disk) only on stderr."""
    for p in paths:
        try:
            with open_raster(p) as r:
                for _, win in r.block_windows(1):
                    r.read(window=win)
        except Exception as e:
            raise _not_written(p, e) from None


# ----------------------------------------------------------------------------- CLI
def add_inference_args(parser: argparse.ArgumentParser) -> None:
    """Sliding-window options shared by ``predict`` and ``evaluate`` (defaults from EvalConfig)."""
    d = EvalConfig()
    parser.add_argument("--window", type=int, default=d.window)
    parser.add_argument("--stride", type=int, default=d.stride)
    parser.add_argument("--blend", choices=BLENDS, default=d.blend)
    parser.add_argument("--tta", action="store_true", help="average over horizontal/vertical flips")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    parser.add_argument("--value-range", metavar="LO,HI", help="scale inputs from LO..HI (every band; or one pair "
                        "per band) instead of the model's range; needed for inputs unlike the training data")


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet predict``."""
    parser.add_argument("inputs", nargs="+", metavar="IN", help="rasters (GeoTIFF, PNG, ...) with the model's bands")
    parser.add_argument("--ckpt", required=True, help="model.pt written by glcnet finetune")
    parser.add_argument("--out", required=True, help="output folder (predict's own; later runs add their maps)")
    add_inference_args(parser)
    parser.add_argument("--probs", action="store_true", help="also write IN_probs.tif (uint8, 255 * p)")
    parser.add_argument("--overwrite", action="store_true", help="replace maps already in --out for these inputs")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet predict``; returns the exit status."""
    from glcnet.finetune.weights import load_model

    cfg = EvalConfig(window=args.window, stride=args.stride, blend=args.blend, tta=args.tta, batch_size=args.batch_size)
    check_values(cfg, flag=True)
    check_window(cfg.window, cfg.stride)
    device = resolve_device(args.device)
    model, ckpt = load_model(args.ckpt)
    value_range = parse_value_range(args.value_range, ckpt["in_channels"])
    paths = [Path(p) for p in args.inputs]
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise GlcnetError(f"inputs: two inputs share the name {next(s for s in stems if stems.count(s) > 1)!r}")
    out_dir = Path(args.out)
    outputs.check(out_dir, "predict", adds=True, inputs=[args.ckpt, *paths])
    for p in paths:  # fail before writing anything
        check_input(p, ckpt, value_range)
        for f in outputs_of(p, out_dir, args.probs).values():
            if f.exists() and not args.overwrite:
                raise GlcnetError(f"{f}: already exists (--overwrite replaces it)")
    if not (out_dir / outputs.MARKER).is_file():
        from glcnet.utils.atomic import write_json

        write_json(out_dir / outputs.MARKER, outputs.marker("predict"))
    for p in paths:
        out = predict_raster(model, ckpt, p, out_dir, cfg=cfg, probs=args.probs, device=device,
                             progress=not args.no_progress, value_range=value_range)
        print(f"{p} -> {', '.join(str(v) for v in out.values())}")
    return 0
