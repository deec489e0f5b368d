"""``glcnet benchmark predict``: streamed sliding-window inference speed and peak memory.

Writes random ``--bands``-band uint8 GeoTIFFs of each ``--sizes`` side and a randomly
initialised ``model.pt`` (``--encoder``, ``--classes``) into a temp folder, then predicts
each raster in a *fresh* subprocess (``glcnet.finetune.predict.predict_raster``) and reports:

    px/s      = H * W / (wall seconds of predict_raster)   (model loading excluded)
    peak RSS  = resource.getrusage(RUSAGE_SELF).ru_maxrss of that subprocess (MiB)
    ratio     = peak RSS of the largest size / peak RSS of the smallest

Streaming keeps the ratio near 1: only a ``window x width`` band is held. On CUDA the
peak GPU memory (``torch.cuda.max_memory_allocated``) is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from glcnet.benchmarks import write_result
from glcnet.errors import GlcnetError


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet benchmark predict``."""
    parser.add_argument("--sizes", default="2000,6000", help="raster sides, comma-separated (default 2000,6000)")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--encoder", default="resnet18", help="resnet18 (CPU default); resnet50 on GPU")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")


def _write_raster(path: Path, side: int, bands: int, seed: int) -> None:
    """Random uint8 GeoTIFF written in row blocks (the parent never holds the whole raster)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", driver="GTiff", height=side, width=side, count=bands, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(0.05, 0, 500000.0, 0, -0.05, 5800000.0), tiled=True) as dst:
        for y in range(0, side, 512):
            h = min(512, side - y)
            dst.write(rng.integers(0, 256, (bands, h, side), dtype=np.uint8), window=Window(0, y, side, h))


def _write_model(path: Path, encoder: str, bands: int, classes: int) -> None:
    import torch

    from glcnet.config import ModelConfig
    from glcnet.finetune.weights import model_checkpoint
    from glcnet.models import build_model
    from glcnet.utils.atomic import torch_save

    torch.manual_seed(0)
    cfg = ModelConfig(encoder=encoder)
    model = build_model(cfg, bands, num_classes=classes)
    torch_save(model_checkpoint(model, cfg, bands=[f"b{i}" for i in range(bands)], value_range=[[0, 255]] * bands,
                                classes=[f"c{i}" for i in range(classes)],
                                colors=[[i * 40 % 256] * 3 for i in range(classes)],
                                ignore_index=255), path)


def child(ckpt: str, raster: str, out: str, window: int, stride: int, batch_size: int, device: str) -> dict:
    """Runs in the fresh subprocess: load, predict once, report time and peak memory."""
    import resource
    import time

    import torch

    from glcnet.config import EvalConfig
    from glcnet.finetune.predict import predict_raster, resolve_device
    from glcnet.finetune.weights import load_model

    dev = resolve_device(device)
    model, meta = load_model(ckpt)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = EvalConfig(window=window, stride=stride, batch_size=batch_size)
    t0 = time.perf_counter()
    predict_raster(model, meta, raster, out, cfg=cfg, device=dev, progress=False)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    import rasterio

    with rasterio.open(raster) as src:
        pixels = src.width * src.height
    return {"pixels": pixels, "seconds": seconds, "px_per_s": pixels / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_model_load_mib": rss_model, "device": str(dev), "threads": torch.get_num_threads(),
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None}


def check_args(args: argparse.Namespace) -> list[int]:
    """Refuse bad settings in one line before any file or subprocess exists; returns the sizes."""
    from glcnet.finetune.predict import resolve_device

    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise GlcnetError(f"benchmark predict: --sizes {args.sizes}: expected positive raster sides, e.g. 2000,6000")
    if args.window < 1 or args.window % 16:
        raise GlcnetError(f"benchmark predict: --window must be a positive multiple of 16, got {args.window}")
    if not 0 < args.stride <= args.window:
        raise GlcnetError(f"benchmark predict: --stride must be in 1..window ({args.window}), got {args.stride}")
    for flag in ("batch_size", "classes", "bands"):
        if getattr(args, flag) < 1:
            raise GlcnetError(f"benchmark predict: --{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    resolve_device(args.device)  # a GPU this machine does not have
    return sizes


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet benchmark predict``; returns the exit status."""
    sizes = check_args(args)
    results = []
    with tempfile.TemporaryDirectory(prefix="glcnet-bench-predict-") as name:
        tmp = Path(name)
        _write_model(tmp / "model.pt", args.encoder, args.bands, args.classes)
        for side in sizes:
            raster = tmp / f"random_{side}.tif"
            _write_raster(raster, side, args.bands, seed=side)
            code = ("import json, sys; from glcnet.benchmarks.predict import child; "
                    "print('RESULT', json.dumps(child(*sys.argv[1:4], *map(int, sys.argv[4:7]), sys.argv[7])))")
            p = subprocess.run([sys.executable, "-c", code, str(tmp / "model.pt"), str(raster), str(tmp / "out"),
                                str(args.window), str(args.stride), str(args.batch_size), args.device],
                               capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if p.returncode != 0 or line is None:
                print(p.stdout + p.stderr, file=sys.stderr)
                return 1
            r = {"side": side, **json.loads(line[len("RESULT "):])}
            results.append(r)
            gpu = f", peak GPU {r['peak_gpu_mib']:.0f} MiB" if r["peak_gpu_mib"] is not None else ""
            print(f"{side}x{side} {args.bands}-band, {args.encoder} on {r['device']} ({r['threads']} threads), "
                  f"window {args.window}/stride {args.stride}: {r['seconds']:.1f} s, {r['px_per_s']:,.0f} px/s, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB (after model load {r['rss_after_model_load_mib']:.0f}){gpu}",
                  flush=True)
            raster.unlink()
    ratio = results[-1]["peak_rss_mib"] / results[0]["peak_rss_mib"]
    if len(results) > 1:
        print(f"peak RSS ratio {sizes[-1]}^2 / {sizes[0]}^2: {ratio:.2f} (target <= 1.5)")
    if args.json:
        write_result(args, {"encoder": args.encoder, "window": args.window, "stride": args.stride,
                               "results": results, "rss_ratio": ratio})
    return 0
