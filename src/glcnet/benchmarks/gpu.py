"""``glcnet benchmark gpu``: the one prepared GPU check, at most 8 minutes on one GPU, no download.

Sections, each with its own time cap inside the total ``--budget`` (default 450 s); an item
that would not fit in what is left of its section is skipped and recorded as skipped:

1. ``views`` (cap 60 s): the batched views + patches on the GPU, samples/s at batch 128 and
   256 (uint8 tiles already on the GPU), against the CPU paths that feed a GPU otherwise:
   the DataLoader with :class:`~glcnet.transforms.ViewCollate` in ``min(8, CPUs)`` workers
   (the ``views.in_loader=true`` path, tiles moved through shared memory) and the
   in-process CPU views on every core.
2. ``pretrain`` (cap 250 s): resnet50 DeepLabv3+, SimCLR and GLCNet at batch 64/128/256,
   fp32 vs bf16 autocast, channels_last off/on: samples/s, peak memory, and the bare
   network forward+backward on the same batch (the floor; ratio step / floor, target
   <= 1.5), via :func:`glcnet.benchmarks.pretrain.time_method`. Order: fp32, then
   bf16 + channels_last, then the two other combinations, so the most useful figures come
   first if time runs out.
3. ``experiment`` (cap 120 s): ``glcnet demo`` on its synthetic scenes with methods
   ``none`` and ``glcnet`` on the GPU (a few hundred pretraining and fine-tuning steps, in
   a subprocess killed at the cap): the whole pipeline runs on CUDA.

Results are printed and written as JSON (``--json``, default ``benchmark_gpu-DATE.json``)
after every item, so a killed run keeps what it measured. Without CUDA it stops at once
with one line. ``--device cpu --tiny`` runs every section at toy sizes on the CPU (a smoke
test of the command, not a measurement).

One module (~400 lines) on purpose: it is the script a lent GPU machine runs once, read and
checked as a whole before its few minutes of device time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from glcnet.benchmarks import is_stream
from glcnet.errors import GlcnetError
from glcnet.utils.atomic import write_json

SECTIONS = {"views": 60.0, "pretrain": 250.0, "experiment": 120.0}  # name -> time cap (s)
COMBOS = [("32", False), ("bf16", True), ("bf16", False), ("32", True)]  # (precision, channels_last), by priority
FULL = {"encoder": "resnet50", "tile": 256, "size": 224, "bands": 4, "view_batches": (128, 256),
        "loader_batch": 128, "loader_s": 20.0, "batches": (64, 128, 256), "steps": 5, "warmup": 2, "view_steps": 5}
TINY = {"encoder": "resnet18", "tile": 64, "size": 32, "bands": 4, "view_batches": (4, 8),
        "loader_batch": 4, "loader_s": 2.0, "batches": (2,), "steps": 1, "warmup": 0, "view_steps": 2}
# the mini experiment: glcnet demo's synthetic scenes and config, none vs glcnet
EXPERIMENT = ["methods=[none,glcnet]", "pretrain.optim.epochs=40", "pretrain.trainer.max_steps=300",
              "finetune.optim.epochs=100", "finetune.val_every=10"]
EXPERIMENT_TINY = ["methods=[none,glcnet]"]  # with --quick


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``glcnet benchmark gpu``."""
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1 ..., or cpu with --tiny")
    parser.add_argument("--tiny", action="store_true", help="toy sizes, seconds: a smoke test of the command")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for everything (default 450; section caps: "
                             + ", ".join(f"{k} {v:.0f}" for k, v in SECTIONS.items()) + ")")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of the sections")
    parser.add_argument("--cap", action="append", default=[], metavar="SECTION=SECONDS",
                        help="another time cap for a section (repeatable), e.g. --cap experiment=300")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="where to write the figures (default: benchmark_gpu-DATE.json here)")


class Clock:
    """Deadlines: the whole run (``budget`` s from creation) and the current section."""

    def __init__(self, budget: float):
        self.t0 = time.monotonic()
        self.end = self.t0 + budget
        self.section_end = self.end

    def start_section(self, cap: float) -> None:
        self.section_end = min(time.monotonic() + cap, self.end)

    def left(self) -> float:
        """Seconds left in the current section."""
        return self.section_end - time.monotonic()

    def fits(self, estimate: float) -> bool:
        return 0 < self.left() and estimate <= self.left()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def check_device(spec: str, tiny: bool) -> torch.device:
    """The device to measure, or one clear error line (no CUDA, CPU without --tiny)."""
    device = torch.device(spec)
    if device.type == "cpu":
        if not tiny:
            raise GlcnetError("benchmark gpu: --device cpu is only a smoke test; add --tiny")
        return device
    if device.type != "cuda":
        raise GlcnetError(f"benchmark gpu: --device {spec!r}: expected cuda, cuda:N or cpu")
    if not torch.cuda.is_available():
        raise GlcnetError(f"benchmark gpu: no CUDA GPU is visible to torch {torch.__version__} "
                          f"(CUDA build {torch.version.cuda}); run it on a GPU machine, or "
                          "--device cpu --tiny for a smoke test")
    if (device.index or 0) >= torch.cuda.device_count():
        raise GlcnetError(f"benchmark gpu: --device {spec}: only {torch.cuda.device_count()} GPU(s) visible")
    torch.cuda.set_device(device)
    return torch.device("cuda", device.index or 0)


def environment(device: torch.device) -> dict[str, Any]:
    """The machine and software the figures were measured with."""
    from glcnet.runs import git_commit, versions

    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
        "device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(), "versions": versions(), "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "tf32_conv": torch.backends.cudnn.allow_tf32,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}", gpu_count=torch.cuda.device_count())
    return env


# ----------------------------------------------------------------------------- views
def _time_views_device(size: dict[str, Any], batch: int, device: torch.device) -> dict[str, Any]:
    from glcnet.config import ViewConfig
    from glcnet.ssl.patches import sample_patches
    from glcnet.transforms import ViewGenerator

    gen = ViewGenerator(ViewConfig(size=size["size"]))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, size["bands"], size["tile"], size["tile"]), dtype=torch.uint8, device=device)
    patch = max(8, 48 * size["size"] // 224)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(2 + size["view_steps"]):
        _sync(device)
        t = time.perf_counter()
        sample_patches(gen(x, g), 4, patch, g)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t)
    res = {"batch": batch, "samples_per_s": batch / statistics.median(times)}
    if device.type == "cuda":
        res["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return res


class _RandomTiles(torch.utils.data.Dataset):
    """``{"image": uint8 [C, T, T]}`` random tiles held in memory (shared with forked workers)."""

    def __init__(self, n: int, bands: int, tile: int):
        self.tiles = torch.randint(0, 256, (n, bands, tile, tile), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.tiles[i]}


def _time_loader(size: dict[str, Any], workers: int, seconds: float) -> dict[str, Any]:
    """Samples/s of views made by DataLoader workers (ViewCollate), over at most ``seconds``."""
    from glcnet.config import ViewConfig
    from glcnet.transforms import ViewCollate

    batch = size["loader_batch"]
    data = _RandomTiles(4 * batch, size["bands"], size["tile"])
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                         collate_fn=ViewCollate(ViewConfig(size=size["size"])),
                                         persistent_workers=workers > 0)
    n, t0, end = 0, None, time.monotonic() + seconds
    while time.monotonic() < end:
        for views in loader:
            if t0 is None:  # the first batch includes the workers' start-up
                t0 = time.perf_counter()
                continue
            n += views.view1.shape[0]
            if time.monotonic() >= end:
                break
    return {"batch": batch, "workers": workers,
            "samples_per_s": n / (time.perf_counter() - t0) if n and t0 is not None else None}


def section_views(size: dict[str, Any], device: torch.device, clock: Clock, record: Callable) -> None:
    """Views on the device (batched) against the CPU loader path, samples/s."""
    res: dict[str, Any] = {"device": {}, "tiles": f"{size['tile']}x{size['tile']}x{size['bands']} uint8",
                           "views": f"2 x {size['size']}x{size['size']} + 4 patches"}
    record(res)
    for batch in size["view_batches"]:
        res["device"][str(batch)] = _time_views_device(size, batch, device)
        record(res)
    cpu = torch.device("cpu")
    res["cpu_in_process"] = _time_views_device({**size, "view_steps": 2}, size["loader_batch"], cpu)
    res["cpu_in_process"]["torch_threads"] = torch.get_num_threads()
    record(res)
    from glcnet.engine import loader_workers

    workers = loader_workers(1 if size is TINY else 8)
    res["cpu_loader"] = _time_loader(size, workers, max(1.0, min(size["loader_s"], clock.left() - 5)))
    record(res)
    best = res["device"][str(max(size["view_batches"]))]["samples_per_s"]
    if res["cpu_loader"]["samples_per_s"]:
        res["device_over_cpu_loader"] = best / res["cpu_loader"]["samples_per_s"]
    res["device_over_cpu_in_process"] = best / res["cpu_in_process"]["samples_per_s"]
    record(res)


# ----------------------------------------------------------------------------- pretraining
def section_pretrain(size: dict[str, Any], device: torch.device, clock: Clock, record: Callable) -> None:
    """Pretraining steps (SimCLR, GLCNet) against the bare forward+backward: samples/s, peak memory, ratio."""
    from glcnet.benchmarks.pretrain import DTYPES, time_method

    rows: list[dict[str, Any]] = []
    res = {"encoder": size["encoder"], "view_size": size["size"], "steps": size["steps"],
           "warmup": size["warmup"], "rows": rows}
    record(res)
    cost: dict[int, float] = {}  # batch -> seconds of the last item at that batch
    for precision, channels_last in COMBOS:
        for batch in size["batches"]:
            for name in ("simclr", "glcnet"):
                row: dict[str, Any] = {"method": name, "batch": batch, "precision": precision,
                                       "channels_last": channels_last}
                smaller = [b for b in cost if b < batch]
                estimate = cost.get(batch) or (cost[max(smaller)] * batch / max(smaller) if smaller else 0.0)
                if not clock.fits(1.2 * estimate):
                    row["skipped"] = f"time cap: about {estimate:.0f} s needed, {max(0.0, clock.left()):.0f} s left"
                    rows.append(row)
                    record(res)
                    continue
                t = time.monotonic()
                try:
                    row.update(time_method(name, encoder=size["encoder"], batch=batch, tile=size["tile"],
                                           size=size["size"], bands=size["bands"], device=device,
                                           dtype=DTYPES[precision], channels_last=channels_last,
                                           steps=size["steps"], warmup=size["warmup"]))
                except torch.cuda.OutOfMemoryError:
                    row["error"] = "out of memory"
                row["seconds"] = time.monotonic() - t
                cost[batch] = row["seconds"]
                _free(device)
                rows.append(row)
                record(res)
                if "ratio" in row:
                    mem = f", peak {row['peak_mem_mib']:.0f} MiB" if "peak_mem_mib" in row else ""
                    print(f"  {name:>6} batch {batch:>3} {precision:>4} channels_last={channels_last!s:5}: "
                          f"{row['samples_per_s']:8.1f} samples/s{mem}; floor {row['floor_samples_per_s']:8.1f} "
                          f"samples/s; ratio {row['ratio']:.2f}", flush=True)


# ----------------------------------------------------------------------------- mini experiment
def experiment_command(out: Path, device: torch.device, tiny: bool) -> list[str]:
    """``glcnet demo`` of none vs glcnet on its synthetic scenes, on ``device`` (one GPU, or the CPU)."""
    acc = "cpu" if device.type == "cpu" else "gpu"
    on_device = [f"{stage}.trainer.{k}={v}" for stage in ("pretrain", "finetune")
                 for k, v in (("accelerator", acc), ("devices", 1))]
    extra = ["--quick", *EXPERIMENT_TINY] if tiny else EXPERIMENT
    return [sys.executable, "-m", "glcnet.cli", "demo", "--out", str(out), *extra, *on_device]


def section_experiment(size: dict[str, Any], device: torch.device, clock: Clock, record: Callable) -> None:
    """A mini experiment (none vs glcnet) through the real CLI on the device."""
    import csv

    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="glcnet-gpu-") as tmp:
        cmd = experiment_command(Path(tmp) / "demo", device, size is TINY)
        res["command"] = " ".join(cmd[2:])
        record(res)
        timeout = max(1.0, clock.left())
        t = time.monotonic()
        try:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            if size is TINY:
                env["OMP_NUM_THREADS"] = "1"
            if device.type == "cuda":  # the child's one GPU is this one
                visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
                i = device.index or 0
                env["CUDA_VISIBLE_DEVICES"] = visible[i] if i < len(visible) and visible[i] else str(i)
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            res.update(status=f"stopped at the section's time cap ({timeout:.0f} s)", seconds=time.monotonic() - t)
            record(res)
            return
        res["seconds"] = time.monotonic() - t
        res["returncode"] = p.returncode
        if p.returncode != 0:
            res["status"] = "failed"
            res["stderr_tail"] = p.stderr.strip().splitlines()[-5:]
            record(res)
            return
        exp = Path(tmp) / "demo" / "experiment"
        with open(exp / "results.csv", newline="") as f:
            res["results"] = list(csv.DictReader(f))
        pre = next((exp / "pretrain").glob("glcnet-*"), None)
        if pre is not None and (pre / "pretrained.pt").is_file():
            import json

            res["pretrain_steps"] = int(torch.load(pre / "pretrained.pt", weights_only=True)["step"])
            recs = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines() if line.strip()]
            rates = [r["train/samples_per_s"] for r in recs if "train/samples_per_s" in r]
            res["pretrain_samples_per_s_median"] = statistics.median(rates) if rates else None
        res["status"] = "done"
        record(res)


RUNNERS = {"views": section_views, "pretrain": section_pretrain, "experiment": section_experiment}


def main(args: argparse.Namespace) -> int:
    """Run ``glcnet benchmark gpu``; returns the exit status."""
    from glcnet.utils.memory import keep_freed_memory

    clock = Clock(args.budget)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise GlcnetError(f"benchmark gpu: unknown section {unknown[0] if unknown else '(none)'!r} "
                          f"(valid: {', '.join(SECTIONS)})")
    if args.budget <= 0:
        raise GlcnetError(f"benchmark gpu: --budget must be > 0 seconds, got {args.budget}")
    caps = dict(SECTIONS)
    for spec in args.cap:
        name, _, value = spec.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if name not in SECTIONS or not seconds > 0:
            raise GlcnetError(f"benchmark gpu: --cap {spec}: expected SECTION=SECONDS with a section of "
                              f"{', '.join(SECTIONS)} and seconds > 0")
        caps[name] = seconds
    device = check_device(args.device, args.tiny)
    path = Path(args.json or f"benchmark_gpu-{time.strftime('%Y%m%d-%H%M%S')}.json")
    if args.json is None and path.exists():
        raise GlcnetError(f"{path}: already exists (give --json PATH)")
    if is_stream(path):
        raise GlcnetError(f"--json {path}: give a file; the figures are rewritten after every section")
    size = TINY if args.tiny else FULL
    keep_freed_memory()  # as glcnet pretrain does
    if args.tiny:  # toy tensors: one torch thread (many tiny parallel regions stall on a shared CPU)
        torch.set_num_threads(1)
    result: dict[str, Any] = {"tiny": args.tiny, "budget_s": args.budget, "caps_s": caps,
                              "environment": environment(device), "sizes": {k: v for k, v in size.items()},
                              "sections": {}}
    env = result["environment"]
    print(f"benchmark gpu on {env.get('gpu', 'the CPU (smoke test, --tiny)')}, torch {env['versions'].get('torch')}, "
          f"budget {args.budget:.0f} s; figures -> {path}", flush=True)

    def save() -> None:
        result["elapsed_s"] = time.monotonic() - clock.t0
        write_json(path, result)

    for name in sections:
        clock.start_section(caps[name])
        if clock.left() <= 1:
            result["sections"][name] = {"skipped": "no time left in the budget"}
            save()
            continue
        print(f"[{name}] up to {clock.left():.0f} s", flush=True)
        t = time.monotonic()

        def record(res: dict[str, Any], name: str = name) -> None:
            result["sections"][name] = res
            save()

        try:
            RUNNERS[name](size, device, clock, record)
        except Exception as e:  # one failing section must not cost the others their device time
            result["sections"].setdefault(name, {})["error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        result["sections"][name]["seconds"] = time.monotonic() - t
        save()
        _free(device)
        _summary(name, result["sections"][name])
    print(f"done in {time.monotonic() - clock.t0:.0f} s; figures: {path}")
    return 0


def _summary(name: str, res: dict[str, Any]) -> None:
    if "error" in res:
        print(f"[{name}] error: {res['error']}")
    if name == "views":
        for b, r in res.get("device", {}).items():
            print(f"[views] device batch {b}: {r['samples_per_s']:.0f} samples/s")
        for key in ("cpu_in_process", "cpu_loader"):
            if res.get(key, {}).get("samples_per_s"):
                print(f"[views] {key}: {res[key]['samples_per_s']:.0f} samples/s")
    elif name == "pretrain":
        rows = res.get("rows", [])
        done = [r for r in rows if "ratio" in r]
        print(f"[pretrain] {len(done)} of {len(rows)} configurations measured, "
              f"{sum('skipped' in r for r in rows)} skipped, {sum('error' in r for r in rows)} failed")
    elif name == "experiment":
        print(f"[experiment] {res.get('status', '?')} ({res.get('pretrain_steps', '?')} pretraining steps)")
        for row in res.get("results", []):
            print(f"[experiment] {row['method']}: test kappa {row['kappa_mean']}, mIoU {row['miou_mean']}; "
                  f"val kappa {row.get('val_kappa_mean', '')}")
