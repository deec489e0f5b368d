"""Every command line of the README (and of the docs pages in ``PAGES``) runs, as written,
with tiny settings and tiny data.

The ```bash blocks of the pages are read line by line (continuations joined, comments
dropped, ``VAR=...`` assignments substituted). Optional parts in brackets
(``[--probs]``) are included. Each ``glcnet`` line runs through the real entry point in a
sandbox folder where the raw data the README names (``Potsdam/``, ``Vaihingen/``, ...)
are tiny fakes in the same layouts, ``../shared/data`` is the real sample data, and
settings that only change the scale (network, steps, views, windows, seeds) are
appended as overrides (an experiment line that does not name its methods runs two of
them). ``prepare`` lines run first, the rest in README order, so that
later lines find what earlier ones made. A line that cannot run here must be listed in
``NOT_RUN`` with the reason; any other line that fails fails the test.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from glcnet.cli import main as cli_main

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")]
REPO = Path(__file__).resolve().parents[1]
# lines that cannot run in a test, by their first words, with the reason
NOT_RUN = {
    "make demo": "installs a virtual environment, then runs `glcnet demo --out demo_out` (run here with --quick)",
    "make test": "runs this test suite",
    "torchrun": "needs 4 GPUs; DDP's gathered loss is tested with gloo in test_ddp_gather.py",
    "glcnet pretrain --config pretrain_paper --data data/potsdam --out runs/glcnet trainer.devices=4":
        "needs 4 GPUs; DDP through the real CLI runs on the CPU (gloo) in test_ddp.py",
    "glcnet pretrain --config pretrain_cpu --data data/loveda --out runs/ddp":
        "2 DDP processes: Lightning would restart the calling script (pytest); test_ddp.py runs this CLI path",
    "srun": "needs SLURM and 8 GPUs",
    "glcnet benchmark gpu": "needs a CUDA GPU; its CPU smoke test (--device cpu --tiny) is in test_benchmarks.py",
}
PAGES = ("README.md", "docs/distributed.md")  # the pages whose ```bash blocks are the user's command lines
NET = ["model.encoder=resnet18", "model.aspp_channels=16"]  # a ResNet: the README exports it for timm
GRID_NET = ["model.encoder=tu-mobilenetv3_small_050", "model.aspp_channels=16"]  # 0.3 M parameters, for the grids
TRAIN = ["trainer.num_workers=0", "trainer.progress=false", "trainer.max_steps=1", "optim.epochs=1",
         "trainer.precision=32-true", "trainer.channels_last=false"]  # the GPU configs on a CPU
TINY = {  # per command: overrides appended to the README's line (the scale, not the meaning)
    "pretrain": [*NET, *TRAIN, "probe.every=0", "trainer.batch_size=2", "views.size=48", "method.patch_size=8",
                 "method.jigsaw_permutations=4"],
    "finetune": [*NET, *TRAIN, "trainer.batch_size=2", "crop=64", "val_every=1", "eval.window=64", "eval.stride=64"],
    "evaluate": ["--window", "64", "--stride", "64"],
    "predict": ["--window", "64", "--stride", "64", "--no-progress"],
    "experiment": [f"{s}.{o}" for s in ("pretrain", "finetune") for o in (*GRID_NET, *TRAIN)]
    + ["pretrain.views.size=48", "pretrain.method.patch_size=8", "pretrain.trainer.batch_size=2",
       "pretrain.method.bn_splits=1",  # MoCo v2 at batch 2: plain BatchNorm (shuffle-BN: benchmark pretrain below)
       "pretrain.method.jigsaw_permutations=4", "pretrain.trainer.limit_batches=1.0", "finetune.crop=64",
       "finetune.trainer.batch_size=2", "finetune.val_every=1", "finetune.eval.window=64",
       "finetune.eval.stride=64", "seeds=[0]", "fractions=[1.0]", "probe=false"],  # probes: test_probe.py
}
TINY["demo"] = TINY["experiment"]
TINY["benchmark views"] = ["--batch", "2", "--batches", "1", "--warmup", "0", "--tile", "64", "--size", "48",
                           "--patch-size", "8"]
TINY["benchmark pretrain"] = ["--batch", "8", "--tile", "64", "--size", "48", "--steps", "1", "--warmup", "0",
                              "--workers", "0"]  # batch 8: MoCo v2's 4 shuffle-BN sub-batches
TINY["benchmark predict"] = ["--sizes", "128,192", "--window", "64", "--stride", "64"]
ISPRS = [(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)]
DEEPGLOBE = [(0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255)]


def readme_lines(path: Path = REPO / "README.md") -> list[str]:
    """The command lines of the ```bash blocks: continuations joined, comments and blank lines dropped."""
    lines, block = [], None
    for raw in path.read_text().splitlines():
        if raw.strip().startswith("```"):
            block = [] if raw.strip() == "```bash" and block is None else None
            continue
        if block is not None:
            lines.append(raw)
    joined, cur = [], ""
    for ln in lines:
        cur += ln.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        text = " ".join(shlex.split(cur, comments=True, posix=False)) if cur.strip() else ""
        if text:
            joined.append(text)
        cur = ""
    return joined


def expand(line: str, env: dict[str, str]) -> list[str]:
    """Shell words of ``line`` with ``$VAR`` substituted and the brackets of optional parts removed."""
    words = [env.get(w[1:], w) if w.startswith("$") else w for w in shlex.split(line)]
    out, optional = [], False
    for w in words:
        if w.startswith("[-"):
            optional, w = True, w[1:]
        if optional and w.endswith("]"):
            optional, w = False, w[:-1]
        out.append(w)
    return out


# ----------------------------------------------------------------------------- tiny raw data
def _tif(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", count=arr.shape[0], height=arr.shape[1], width=arr.shape[2],
                       dtype=arr.dtype) as dst:
        dst.write(arr)


def _colours(idx: np.ndarray, colors) -> np.ndarray:
    return np.moveaxis(np.asarray(colors, np.uint8)[idx], -1, 0)  # [3, H, W]


def _sandbox(root: Path, shared: Path) -> None:
    """The raw data sets the README's lines name, as tiny fakes (256 px scenes) in their layouts."""
    rng = np.random.default_rng(0)
    side = 256

    def labels(k: int) -> np.ndarray:
        idx = np.zeros((side, side), np.int64)
        for c in range(k):  # every class in a block, so that no class is empty
            idx[:, c * side // k:(c + 1) * side // k] = c
        return idx

    for sid in ("2_10", "2_11", "2_12", "7_12", "2_13"):  # 4 train scenes (2 of them --val-scenes), 1 test
        _tif(root / "Potsdam" / "4_Ortho_RGBIR" / f"top_potsdam_{sid}_RGBIR.tif",
             rng.integers(0, 256, (4, side, side), dtype=np.uint8))
        for kind in ("label", "label_noBoundary"):
            _tif(root / "Potsdam" / "5_Labels_all" / f"top_potsdam_{sid}_{kind}.tif", _colours(labels(6), ISPRS))
    shutil.copy(root / "Potsdam" / "4_Ortho_RGBIR" / "top_potsdam_2_13_RGBIR.tif", root / "top_potsdam_2_13_RGBIR.tif")
    _tif(root / "scene_uint16.tif", rng.integers(0, 4096, (4, side, side), dtype=np.uint16))
    for area in (1, 3, 5, 2):
        _tif(root / "Vaihingen" / "top" / f"top_mosaic_09cm_area{area}.tif",
             rng.integers(0, 256, (3, side, side), dtype=np.uint8))
        _tif(root / "Vaihingen" / "gts_for_participants" / f"top_mosaic_09cm_area{area}.tif",
             _colours(labels(6), ISPRS))
        _tif(root / "Vaihingen" / "dsm" / f"dsm_09cm_matching_area{area}.tif",
             rng.normal(260, 5, (1, side, side)).astype(np.float32))
    land = root / "land-train"
    land.mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(land / f"{i}_sat.jpg")
        Image.fromarray(np.moveaxis(_colours(labels(6), DEEPGLOBE), 0, -1)).save(land / f"{i}_mask.png")
    (root / "LoveDA").symlink_to(shared / "loveda")
    for i in range(5):
        dem = rng.normal(100, 10, (1, side, side)).astype(np.float32)
        dem[:, :32, :32] = -9999
        _tif(root / "dem_tiles" / "images" / f"t{i}.tif", dem)
        (root / "dem_tiles" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels(2).astype(np.uint8)).save(root / "dem_tiles" / "masks" / f"t{i}.png")
    # the road images: 8 labelled and 2 unlabelled of the real samples
    roads = root / "shared" / "roads"
    for sub, n in (("training/images", 8), ("training/groundtruth", 8)):
        (roads / sub).mkdir(parents=True)
        for p in sorted((shared / "roads" / sub).iterdir())[:n]:
            shutil.copy(p, roads / sub / p.name)
    (roads / "unlabeled").mkdir()
    for p in sorted((shared / "roads" / "unlabeled").iterdir())[:2]:
        shutil.copy(p, roads / "unlabeled" / p.name)
    (root / "roads").symlink_to(roads / "training")
    (root / "roads_test").symlink_to(roads / "unlabeled")
    (root / "shared" / "isprs").symlink_to(shared / "isprs")


def _sandboxed(words: list[str], root: Path) -> list[str]:
    """``../shared/data/...`` -> the sandbox's copy (tiny road subset, real ISPRS samples); PREPARED -> a data set."""
    out = []
    for w in words:
        w = re.sub(r"(^|=)\.\./shared/data/", lambda m: m.group(1) + str(root / "shared") + "/", w)
        out.append("data/potsdam" if w == "PREPARED" else w)
    return out


def test_every_readme_command_runs(shared_data, tmp_path, monkeypatch, one_thread):
    lines = [ln for page in PAGES for ln in readme_lines(REPO / page)]
    env: dict[str, str] = {}
    commands, skipped = [], set()
    for line in lines:
        if m := re.fullmatch(r"(\w+)=(.*)", line):
            env[m.group(1)] = shlex.split(m.group(2))[0]
            continue
        words = expand(line, env)
        reason = next((k for k in NOT_RUN if line.startswith(k)), None)
        if reason:
            skipped.add(reason)
            continue
        assert words[0] == "glcnet", f"README line neither runnable nor in NOT_RUN: {line}"
        commands.append(words[1:])
    assert skipped == set(NOT_RUN), f"NOT_RUN lists lines the README no longer has: {set(NOT_RUN) - skipped}"
    assert len(commands) >= 20, f"only {len(commands)} command lines found in {PAGES}"

    _sandbox(tmp_path, shared_data)
    monkeypatch.chdir(tmp_path)
    commands.sort(key=lambda c: c[0] != "prepare")  # data sets first; the rest in README order
    for words in commands:
        argv = _sandboxed(words, tmp_path) + TINY.get(" ".join(words[:2]), TINY.get(words[0], []))
        if words[0] == "experiment" and "--only-table" not in words and not any(w.startswith("methods=") for w in words):
            argv.append("methods=[none,glcnet]")  # a grid that does not name its methods: two of them
        t0 = time.time()
        code = cli_main(argv)
        print(f"README: {time.time() - t0:5.1f} s  glcnet {shlex.join(words)}", file=sys.__stderr__)
        assert code == 0, f"line of {PAGES} failed ({code}): glcnet {shlex.join(words)}"
    assert (tmp_path / "runs" / "experiment_cpu" / "results.md").is_file()
    assert (tmp_path / "preds" / "scene_uint16_pred.tif").is_file()
