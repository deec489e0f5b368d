"""``glcnet benchmark pretrain``: training throughput of glcnet vs simclr, and loader throughput.

Targets: the GLCNet step costs at most 1.3x the SimCLR step (same network, same
views, batch and device), and the data pipeline delivers at least 3x the step throughput.
A step = view generation on the device + forward + backward + Adam step, exactly the work of
``glcnet pretrain``. The loader reads tiles of a prepared data set (synthetic scenes made on
the fly unless ``--data`` is given) with ``--workers`` processes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from glcnet.benchmarks import write_result
from glcnet.config import MethodConfig, ModelConfig, PretrainConfig, ViewConfig
from glcnet.utils.memory import keep_freed_memory


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet benchmark pretrain``."""
    parser.add_argument("--encoder", default=None, help="default: resnet18 on CPU, resnet50 on GPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on CPU, 128 on GPU")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--size", type=int, default=224, help="view size")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", default="32", choices=["32", "16", "bf16"], help="autocast on GPU")
    parser.add_argument("--data", help="prepared data set for the loader benchmark (default: synthetic)")
    parser.add_argument("--json", help="also write the figures to this JSON file")


def _time_steps(name: str, args: argparse.Namespace, encoder: str, batch: int, device: torch.device) -> float:
    """Median seconds per optimisation step of method ``name``."""
    from glcnet.ssl import build_method

    cfg = PretrainConfig(model=ModelConfig(encoder=encoder), views=ViewConfig(size=args.size),
                         method=MethodConfig(name=name, patch_size=max(8, 48 * args.size // 224)))
    torch.manual_seed(0)
    method = build_method(cfg, args.bands, None, None).to(device)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randint(0, 256, (batch, args.bands, args.tile, args.tile), dtype=torch.uint8,
                      device=device)  # 8-bit tiles, as the pretraining loader gives them
    dtype = {"16": torch.float16, "bf16": torch.bfloat16}.get(args.precision)
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = method(x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.on_after_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _loader_rate(args: argparse.Namespace, batch: int) -> float:
    """Samples/s delivered by the pretraining DataLoader over a prepared data set."""
    from torch.utils.data import DataLoader

    from glcnet.data.prepared import PreparedDataset, TileDataset

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if not root:
            from glcnet.data.prepare import prepare
            from glcnet.data.synthetic import generate_scenes

            raw = Path(tmp) / "raw"
            generate_scenes(raw, n_scenes=4, size=1024, seed=0)
            root = prepare("generic", raw, Path(tmp) / "prepared", tile_size=args.tile)
        pool = TileDataset(PreparedDataset(root), splits=("train", "unlabeled"), with_mask=False, uint8=True)
        loader = DataLoader(pool, batch_size=batch, shuffle=True, drop_last=True,
                            num_workers=args.workers, persistent_workers=args.workers > 0)
        n, t0 = 0, 0.0
        for _ in range(100):
            for b in loader:
                if not t0:  # first batch includes worker start-up
                    t0 = time.perf_counter()
                    continue
                n += b["image"].shape[0]
            if n >= 20 * batch:
                break
        return n / (time.perf_counter() - t0)


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet benchmark pretrain``; returns the exit status."""
    keep_freed_memory()  # as glcnet pretrain does
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = args.encoder or ("resnet50" if device.type == "cuda" else "resnet18")
    batch = args.batch or (128 if device.type == "cuda" else 16)
    print(f"device={device} encoder={encoder} batch={batch} tile={args.tile} view={args.size} "
          f"bands={args.bands} threads={torch.get_num_threads()}")
    res: dict[str, float] = {}
    for name in ("simclr", "glcnet"):
        s = _time_steps(name, args, encoder, batch, device)
        res[f"{name}_samples_per_s"] = batch / s
        print(f"{name:>7}: {s * 1000:8.1f} ms/step  {batch / s:8.1f} samples/s")
    res["glcnet_over_simclr_step_time"] = res["simclr_samples_per_s"] / res["glcnet_samples_per_s"]
    print(f"glcnet step / simclr step = {res['glcnet_over_simclr_step_time']:.2f}x (target <= 1.3x)")
    res["loader_samples_per_s"] = _loader_rate(args, batch)
    res["loader_over_step"] = res["loader_samples_per_s"] / res["glcnet_samples_per_s"]
    print(f" loader: {res['loader_samples_per_s']:8.1f} samples/s with {args.workers} workers = "
          f"{res['loader_over_step']:.1f}x the glcnet step (target >= 3x)")
    if args.json:
        write_result(args, {"device": str(device), "encoder": encoder, "batch": batch, **res})
    return 0
