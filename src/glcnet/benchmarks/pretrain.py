"""``glcnet benchmark pretrain``: pretraining step cost per method against its floor, and loader throughput.

A step = view generation on the device + forward + backward + Adam step, exactly the work
of ``glcnet pretrain`` (uint8 tiles in, as the loader gives them). Figures per method:

- ``floor``: the bare forward + backward + Adam step of the *same network on the same
  batch*: the exact tensors the method fed its DeepLab in that step (recorded), loss =
  sum of the means of the feature maps the method uses (ASPP, plus the decoder map when
  the decoder gets a gradient). ``ratio = step / floor`` is what the method adds to the
  network (views, patches, heads, losses, momentum copies); target <= 1.5.
- ``glcnet / simclr`` step time (same network, views, batch and device); target <= 1.3.
- the loader: tiles of a prepared data set (synthetic scenes made on the fly unless
  ``--data``) read by ``--workers`` processes; target >= 3x the GLCNet step.

Step and floor alternate within one loop, so both see the same machine load; figures are
medians over ``--steps`` after ``--warmup``. On CUDA the peak memory of the step is given.
``glcnet benchmark gpu`` reuses :func:`time_method`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from glcnet.benchmarks import write_result
from glcnet.config import MethodConfig, ModelConfig, PretrainConfig, ViewConfig
from glcnet.errors import GlcnetError
from glcnet.utils.memory import keep_freed_memory

ALL_METHODS = ("glcnet", "simclr", "mocov2", "inpainting", "jigsaw")
DTYPES = {"32": None, "16": torch.float16, "bf16": torch.bfloat16}


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet benchmark pretrain``."""
    parser.add_argument("--encoder", default=None, help="default: resnet18 on CPU, resnet50 on GPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 16 on CPU, 128 on GPU")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--size", type=int, default=224, help="view size")
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--methods", default=",".join(ALL_METHODS),
                        help=f"comma-separated (default: all of {', '.join(ALL_METHODS)})")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method (default 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="loader workers; 0 skips the loader figure")
    parser.add_argument("--precision", default="32", choices=list(DTYPES), help="autocast dtype (32: none)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    parser.add_argument("--data", help="prepared data set for the loader benchmark (default: synthetic)")
    parser.add_argument("--json", help="also write the figures to this JSON file")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick_device(spec: str) -> torch.device:
    """``auto``: the first GPU if there is one, else the CPU; anything else must be usable."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise GlcnetError(f"device {spec!r} is not usable ({str(e).splitlines()[0]})") from None
    return device


def method_config(name: str, encoder: str, size: int, **method: Any) -> PretrainConfig:
    """The default config of ``name`` at view size ``size`` (patch size scaled as 48 at 224)."""
    return PretrainConfig(model=ModelConfig(encoder=encoder), views=ViewConfig(size=size),
                          method=MethodConfig(name=name, patch_size=max(8, 48 * size // 224), **method))


def time_method(name: str, *, encoder: str, batch: int, tile: int, size: int, bands: int, device: torch.device,
                dtype: torch.dtype | None = None, channels_last: bool = False, steps: int = 3, warmup: int = 1,
                method_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Median seconds of one pretraining step of ``name`` and of its floor (module doc).

    Returns ``step_s``, ``floor_s``, ``ratio``, ``samples_per_s``, ``net_inputs`` (shapes the
    method fed its network) and, on CUDA, ``peak_mem_mib`` (step) and ``floor_peak_mem_mib``.
    """
    from glcnet.ssl import build_method

    cfg = method_config(name, encoder, size, **(method_options or {}))
    torch.manual_seed(0)
    method = build_method(cfg, bands, None, None).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    method = method.to(memory_format=fmt)
    net = method.net
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    floor_opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randint(0, 256, (batch, bands, tile, tile), dtype=torch.uint8, device=device)  # 8-bit tiles
    x = x.contiguous(memory_format=fmt)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else nullcontext
    inputs: list[torch.Tensor] = []
    features = net.features

    def recording(t: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs.append(t.detach())
        return features(t)

    def step() -> None:
        with autocast():
            loss = method(x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.on_after_step()

    keys: tuple[str, ...] = ()

    def floor() -> None:
        with autocast():
            loss = torch.stack([out[k].float().mean() for out in map(net.features, inputs) for k in keys]).sum()
        floor_opt.zero_grad(set_to_none=True)
        loss.backward()
        floor_opt.step()

    net.features = recording  # type: ignore[method-assign,assignment]  # record what one step feeds the network
    step()
    del net.features
    if not inputs:
        raise GlcnetError(f"benchmark pretrain: {name} did not call its network's features()")
    keys = ("aspp", "decoder") if any(p.grad is not None for p in net.decoder.block2.parameters()) else ("aspp",)
    times: dict[str, list[float]] = {"step": [], "floor": []}
    peaks: dict[str, int] = {"step": 0, "floor": 0}
    for i in range(warmup + steps):
        for kind, fn in (("step", step), ("floor", floor)):
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times[kind].append(time.perf_counter() - t)
                if device.type == "cuda":
                    peaks[kind] = max(peaks[kind], torch.cuda.max_memory_allocated(device))
    step_s, floor_s = statistics.median(times["step"]), statistics.median(times["floor"])
    res: dict[str, Any] = {
        "step_s": step_s, "floor_s": floor_s, "ratio": step_s / floor_s, "samples_per_s": batch / step_s,
        "floor_samples_per_s": batch / floor_s, "net_inputs": [list(t.shape) for t in inputs],
        "floor_outputs": list(keys),
    }
    if device.type == "cuda":
        res["peak_mem_mib"] = peaks["step"] / 2**20
        res["floor_peak_mem_mib"] = peaks["floor"] / 2**20
    return res


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
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad or not methods:
        raise GlcnetError(f"benchmark pretrain: unknown method {bad[0] if bad else '(none)'!r} "
                          f"(valid: {', '.join(ALL_METHODS)})")
    if min(args.steps, args.tile, args.size, args.bands) < 1 or min(args.warmup, args.workers) < 0:
        raise GlcnetError("benchmark pretrain: --steps, --tile, --size, --bands must be >= 1, --warmup, --workers >= 0")
    device = pick_device(args.device)
    encoder = args.encoder or ("resnet50" if device.type == "cuda" else "resnet18")
    batch = args.batch or (128 if device.type == "cuda" else 16)
    print(f"device={device} encoder={encoder} batch={batch} tile={args.tile} view={args.size} bands={args.bands} "
          f"precision={args.precision} channels_last={args.channels_last} threads={torch.get_num_threads()}")
    res: dict[str, Any] = {"device": str(device), "encoder": encoder, "batch": batch, "tile": args.tile,
                           "size": args.size, "bands": args.bands, "precision": args.precision,
                           "channels_last": args.channels_last, "torch_threads": torch.get_num_threads(),
                           "methods": {}}
    for name in methods:
        r = time_method(name, encoder=encoder, batch=batch, tile=args.tile, size=args.size, bands=args.bands,
                        device=device, dtype=DTYPES[args.precision], channels_last=args.channels_last,
                        steps=args.steps, warmup=args.warmup)
        res["methods"][name] = r
        mem = f", peak {r['peak_mem_mib']:.0f} MiB" if "peak_mem_mib" in r else ""
        print(f"{name:>10}: step {r['step_s'] * 1e3:8.1f} ms ({r['samples_per_s']:7.1f} samples/s{mem}); "
              f"bare network fwd+bwd {r['floor_s'] * 1e3:8.1f} ms on {r['net_inputs']}: "
              f"ratio {r['ratio']:.2f} (target <= 1.5)")
    m = res["methods"]
    if "glcnet" in m and "simclr" in m:
        res["glcnet_over_simclr_step_time"] = m["glcnet"]["step_s"] / m["simclr"]["step_s"]
        print(f"glcnet step / simclr step = {res['glcnet_over_simclr_step_time']:.2f}x (target <= 1.3x)")
    if args.workers and "glcnet" in m:
        res["loader_samples_per_s"] = _loader_rate(args, batch)
        res["loader_over_step"] = res["loader_samples_per_s"] / m["glcnet"]["samples_per_s"]
        print(f"    loader: {res['loader_samples_per_s']:8.1f} samples/s with {args.workers} workers = "
              f"{res['loader_over_step']:.1f}x the glcnet step (target >= 3x)")
    if args.json:
        write_result(args, res)
    return 0
