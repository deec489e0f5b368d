"""``glcnet benchmark views``: the reference per-sample view pipeline vs the batched one.

Both run on the same batches of random ``tile x tile`` uint8 tiles with ``bands`` bands.
Reference (:mod:`glcnet.benchmarks.reference_views`): per sample, PIL/NumPy transforms
with an index map, the set-based patch search, then collation into tensors. Ours
(:mod:`glcnet.transforms`): ``ViewGenerator`` on the uint8 batch (its CPU fast path,
float views in [0, 1] out) and ``sample_patches``, on the whole batch. Batches alternate between the two, so both see
the same machine load; figures are medians over ``--batches`` after ``--warmup``, as wall
clock and as process CPU time (all threads; less sensitive to other processes).

``--processes N`` then also runs both pipelines the way DataLoader workers do: N processes
of one torch thread each, all on the reference at once, then all on ours at once, each on
its own batches; the figure is the samples of all processes over the wall time of the
phase. That gives the reference the cores ours uses (the first comparison gives it one).

``--background-load N`` starts N busy processes (a pure-Python spin loop each) before the
warm-up and stops them at the end: the figures of a machine where other work shares the
cores. Ours spends its torch threads across samples, one intra-op thread each
(:mod:`glcnet.utils.threads`), so it does not collapse there (targets: >= 10x the reference
under 2 busy processes, not below ~20x idle).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from glcnet.benchmarks import write_result
from glcnet.benchmarks.reference_views import reference_sample
from glcnet.config import ViewConfig
from glcnet.errors import GlcnetError
from glcnet.ssl.patches import sample_patches
from glcnet.transforms import ViewGenerator
from glcnet.utils.memory import keep_freed_memory


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet benchmark views``."""
    parser.add_argument("--batch", type=int, default=64, help="tiles per batch (default 64)")
    parser.add_argument("--batches", type=int, default=10, help="timed batches (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3: steady state)")
    parser.add_argument("--tile", type=int, default=256, help="tile side (default 256)")
    parser.add_argument("--bands", type=int, default=4, help="bands per tile (default 4)")
    parser.add_argument("--size", type=int, default=224, help="view side (default 224)")
    parser.add_argument("--patch-num", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=48)
    parser.add_argument("--device", default="cpu", help="device for ours: cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for ours (default: torch's), spread over samples, one intra-op each")
    parser.add_argument("--processes", type=int, default=0, metavar="N",
                        help="also time both in N one-thread processes at once (DataLoader-worker style)")
    parser.add_argument("--background-load", type=int, default=0, metavar="N",
                        help="run with N busy processes beside (started and stopped by the benchmark)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def background_load(n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` busy processes (pure-Python spin loops) for the duration of the block."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _reference_batch(tiles: np.ndarray, rng, rnd, args, times: dict[str, float]) -> dict[str, torch.Tensor]:
    samples = [reference_sample(t, rng, rnd, args.size, args.patch_size, args.patch_num, times) for t in tiles]
    return {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}  # default collate


def _our_batch(tiles: np.ndarray, gen: ViewGenerator, g: torch.Generator, args, device: torch.device) -> None:
    """Views and patches of one batch of uint8 ``[B, H, W, C]`` tiles (passed as a ``[B, C, H, W]`` view)."""
    x = torch.from_numpy(tiles).to(device).permute(0, 3, 1, 2)  # uint8: the generator scales by 1/255
    views = gen(x, g)
    sample_patches(views, args.patch_num, args.patch_size, g)
    _sync(device)


def _generator(args: argparse.Namespace) -> ViewGenerator:
    """The default views at ``--size``; HSV jitter on bands 0-2 when there are 3 or more."""
    return ViewGenerator(ViewConfig(size=args.size, rgb_bands=(0, 1, 2) if args.bands >= 3 else None))


def _process(args: argparse.Namespace, rank: int, barrier, results) -> None:
    """One of ``--processes``: one torch thread; the reference on its batches, then ours."""
    keep_freed_memory()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed + 1 + rank)
    rnd = random.Random(args.seed + 1 + rank)
    g = torch.Generator().manual_seed(args.seed + 1 + rank)
    gen = _generator(args)
    tiles = [rng.integers(0, 256, (args.batch, args.tile, args.tile, args.bands), dtype=np.uint8)
             for _ in range(args.warmup + args.batches)]
    for t in tiles[:args.warmup]:
        _reference_batch(t, rng, rnd, args, {})
        _our_batch(t, gen, g, args, torch.device("cpu"))
    spans = []
    for run in (lambda t: _reference_batch(t, rng, rnd, args, {}),
                lambda t: _our_batch(t, gen, g, args, torch.device("cpu"))):
        barrier.wait()  # every process starts the phase together
        t0 = time.perf_counter()
        for t in tiles[args.warmup:]:
            run(t)
        spans.append((t0, time.perf_counter()))
    results.put(spans)


def _in_processes(args: argparse.Namespace) -> tuple[float, float]:
    """(reference, ours) ms per sample of all ``--processes`` together (wall time of each phase)."""
    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited torch threads
    barrier, results = ctx.Barrier(args.processes), ctx.Queue()
    procs = [ctx.Process(target=_process, args=(args, r, barrier, results)) for r in range(args.processes)]
    for p in procs:
        p.start()
    spans = [results.get() for _ in procs]
    for p in procs:
        p.join()
    samples = args.processes * args.batches * args.batch
    return tuple((max(s[k][1] for s in spans) - min(s[k][0] for s in spans)) / samples * 1e3 for k in (0, 1))


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet benchmark views``; returns the exit status."""
    if min(args.batch, args.batches, args.tile, args.bands, args.size) < 1 \
            or min(args.warmup, args.processes, args.background_load) < 0:
        raise GlcnetError("benchmark views: --batch, --batches, --tile, --bands, --size must be >= 1, "
                          "--warmup, --processes and --background-load >= 0")
    if args.size > args.tile:
        raise GlcnetError(f"benchmark views: --size {args.size} is larger than --tile {args.tile}")
    if args.processes and args.device != "cpu":
        raise GlcnetError("benchmark views: --processes times the CPU path (leave --device cpu)")
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise GlcnetError(f"benchmark views: device {args.device!r} is not usable ({e})") from None
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as glcnet pretrain does
    with background_load(args.background_load):
        result = _measure(args, device)
    if args.json:
        write_result(args, result)
    return 0


def _measure(args: argparse.Namespace, device: torch.device) -> dict:
    rng = np.random.default_rng(args.seed)
    rnd = random.Random(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    gen = _generator(args)
    n = args.warmup + args.batches
    load_start = os.getloadavg()[0]
    ref_t, our_t = [], []  # (wall, process CPU) ms per sample
    times: dict[str, float] = {}
    for i in range(n):
        tiles = rng.integers(0, 256, (args.batch, args.tile, args.tile, args.bands), dtype=np.uint8)
        t0, c0 = time.perf_counter(), time.process_time()
        _reference_batch(tiles, rng, rnd, args, times if i >= args.warmup else {})
        t1, c1 = time.perf_counter(), time.process_time()
        _sync(device)
        t2, c2 = time.perf_counter(), time.process_time()
        _our_batch(tiles, gen, g, args, device)
        t3, c3 = time.perf_counter(), time.process_time()
        if i >= args.warmup:
            ref_t.append(((t1 - t0) / args.batch * 1e3, (c1 - c0) / args.batch * 1e3))
            our_t.append(((t3 - t2) / args.batch * 1e3, (c3 - c2) / args.batch * 1e3))
    ref, ours = statistics.median(r for r, _ in ref_t), statistics.median(r for r, _ in our_t)
    ref_cpu, ours_cpu = statistics.median(c for _, c in ref_t), statistics.median(c for _, c in our_t)
    total = args.batch * args.batches
    result = {
        "batch": args.batch, "batches": args.batches, "tile": args.tile, "bands": args.bands,
        "size": args.size, "patch_num": args.patch_num, "patch_size": args.patch_size,
        "device": str(device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "background_load": args.background_load,
        "allocator": "system" if os.environ.get("GLCNET_ALLOCATOR") == "system" else "reuse freed memory",
        "load_avg_start": round(load_start, 2), "load_avg_end": round(os.getloadavg()[0], 2),
        "reference_ms_per_sample": round(ref, 3),
        "reference_transform_ms_per_sample": round(times["transform"] / total * 1e3, 3),
        "reference_patch_search_ms_per_sample": round(times["patches"] / total * 1e3, 3),
        "ours_ms_per_sample": round(ours, 4),
        "speedup": round(ref / ours, 1),
        "reference_cpu_ms_per_sample": round(ref_cpu, 3),
        "ours_cpu_ms_per_sample": round(ours_cpu, 4),
        "speedup_cpu_time": round(ref_cpu / max(ours_cpu, 1e-9), 1),
    }
    print(f"views benchmark: batch {args.batch}, {args.tile}x{args.tile}x{args.bands} uint8 tiles -> "
          f"2 views {args.size}x{args.size} + {args.patch_num} patches of {args.patch_size}; "
          f"median of {args.batches} batches; torch threads {result['torch_threads']}, "
          f"{args.background_load} busy background processes, "
          f"malloc {result['allocator']}, load average {result['load_avg_start']} -> {result['load_avg_end']}")
    print(f"reference (per sample, PIL/NumPy + index map + patch search): {ref:8.3f} ms/sample "
          f"(transform {result['reference_transform_ms_per_sample']:.3f}, "
          f"patch search {result['reference_patch_search_ms_per_sample']:.3f}); "
          f"process CPU time {ref_cpu:.3f} ms/sample")
    print(f"ours (batched, {device}):{'':31}{ours:8.3f} ms/sample; process CPU time {ours_cpu:.3f} ms/sample")
    print(f"speed-up: {ref / ours:.1f}x wall clock, {result['speedup_cpu_time']:.1f}x process CPU time")
    if args.processes:
        ref_p, ours_p = _in_processes(args)
        result.update(processes=args.processes, reference_processes_ms_per_sample=round(ref_p, 4),
                      ours_processes_ms_per_sample=round(ours_p, 4), speedup_processes=round(ref_p / ours_p, 1))
        procs = f"{args.processes} process{'es' if args.processes > 1 else ''}"
        print(f"{procs} x 1 torch thread, all at once: reference {ref_p:.3f} ms/sample, "
              f"ours {ours_p:.3f} ms/sample: {ref_p / ours_p:.1f}x")
    return result


if __name__ == "__main__":  # same as `glcnet benchmark views ...`
    import sys

    from glcnet.cli import main as cli_main

    sys.exit(cli_main(["benchmark", "views", *sys.argv[1:]]))
