"""Faults over every command: a user's work is never lost, and every refusal is one line.

Grouped by the classes of issue 13: (1) an output never destroys what it did not create,
(2) signals and exit statuses tell the truth, (3) faults of the disk and of our own files,
(4) input values that lie, (5) the documented syntax works. Each case asserts the exit
status, the one line naming the file or setting, and that no file that existed before
changed (hashes of the folders before and after).

Most cases run the real entry point in-process (``glcnet.cli.main``) on a tiny synthetic
data set and tiny runs made once per module; the signal and disk-full cases run the CLI
in subprocesses, because they need real signals and a real file-size limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from glcnet.cli import main as cli_main
from glcnet.data.synthetic import BANDS, CLASSES, generate_scenes
from glcnet.utils.atomic import torch_save

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")]
TINY = ["model.encoder=tu-mobilenetv3_small_050", "model.aspp_channels=16", "trainer.num_workers=0",
        "trainer.progress=false", "trainer.batch_size=4"]
PRE = ["--config", "pretrain_cpu", *TINY, "views.size=32", "method.patch_size=8", "trainer.log_every=1",
       "optim.epochs=1"]
FT = ["--config", "finetune_cpu", "--fraction", "1.0", *TINY, "crop=64", "optim.epochs=1", "eval.window=64",
      "eval.stride=64"]
HAS_GPU = torch.cuda.is_available()


# ----------------------------------------------------------------------------- helpers
def snapshot(*roots: Path) -> dict[str, str]:
    """Every file (sha1) and folder under ``roots``: what a refused command must leave as it was."""
    out: dict[str, str] = {}
    for root in map(Path, roots):
        if root.is_file():
            out[str(root)] = hashlib.sha1(root.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli_main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def refused(capsys, args, *needles, watch=(), rc=2) -> str:
    """Run ``glcnet ARGS``: exit status ``rc``, exactly one line on stderr naming ``needles``, and
    nothing under ``watch`` changed. Returns the line."""
    before = snapshot(*watch)
    code, _, err = run(capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == rc, f"exit {code}, expected {rc}: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert str(n) in lines[0], f"{n!r} not in {lines[0]!r}"
    assert snapshot(*watch) == before, "a file that existed before was changed"
    return lines[0]


def leftovers(folder: Path) -> list[Path]:
    """Temporary files or folders of atomic writes (``.NAME.tmp-*``, ``.NAME.old-*``)."""
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def write_tif(path: Path, arr: np.ndarray, nodata=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", count=arr.shape[0], height=arr.shape[1], width=arr.shape[2],
                       dtype=arr.dtype, nodata=nodata) as dst:
        dst.write(arr)
    return path


def cli_process(*args, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "glcnet.cli", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} did not appear: {proc.communicate()[1] if proc.poll() is not None else ''}"


@pytest.fixture(scope="module")
def w(tmp_path_factory, one_thread) -> SimpleNamespace:
    """A tiny prepared data set (5 synthetic 128 px scenes, 64 px tiles), a pretraining run and a
    fine-tuning run of a 0.3 M-parameter DeepLabv3+, made once for the module."""
    root = tmp_path_factory.mktemp("faults")
    raw = generate_scenes(root / "raw", n_scenes=5, n_unlabeled=1, size=128, seed=0)
    prep, pre, ft = root / "prep", root / "pre", root / "ft"
    assert cli_main(["prepare", "generic", "--src", str(raw), "--out", str(prep), "--unlabeled", str(raw / "unlabeled"),
                     "--classes", ",".join(CLASSES), "--bands", ",".join(BANDS), "--tile-size", "64",
                     "--split-ratios", "0.6,0.2,0.2", "--fractions", "0.5,1.0"]) == 0
    assert cli_main(["pretrain", *PRE, "--data", str(prep), "--out", str(pre)]) == 0
    assert cli_main(["finetune", *FT, "--data", str(prep), "--init", str(pre), "--out", str(ft)]) == 0
    return SimpleNamespace(root=root, raw=raw, prep=prep, pre=pre, ft=ft, model=ft / "model.pt")


def world(w) -> list[Path]:
    return [w.raw, w.prep, w.pre, w.ft]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, one_thread) -> Path:
    """A randomly initialised model.pt (4 bands, 3 classes, uint8 0..255) for checks that need no training."""
    from glcnet.config import ModelConfig
    from glcnet.finetune.weights import model_checkpoint
    from glcnet.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(encoder="tu-mobilenetv3_small_050", aspp_channels=16)
    model = build_model(cfg, 4, num_classes=3, mean=[0.4] * 4, std=[0.2] * 4)
    path = tmp_path_factory.mktemp("tiny_model") / "model.pt"
    torch_save(model_checkpoint(model, cfg, bands=BANDS, value_range=[[0, 255]] * 4, classes=["a", "b", "c"],
                                colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]], ignore_index=255), path)
    return path


# ============================================================================= 1. outputs
def test_evaluate_into_the_run_it_evaluates_is_refused(w, capsys):
    refused(capsys, ["evaluate", "--ckpt", w.model, "--out", w.ft, "--window", "64", "--stride", "64"],
            w.ft, "input", watch=world(w))


def test_evaluate_report_is_replaced_only_with_overwrite(w, capsys, tmp_path):
    out = tmp_path / "report"
    args = ["evaluate", "--ckpt", w.model, "--out", out, "--window", "64", "--stride", "64"]
    assert run(capsys, *args)[0] == 0
    refused(capsys, args, out, "--overwrite", watch=[tmp_path, *world(w)])
    (out / "metrics.md").write_text("edited")
    assert run(capsys, *args, "--overwrite")[0] == 0
    assert "Kappa" in (out / "metrics.md").read_text() and not leftovers(tmp_path)


@pytest.mark.parametrize("command", ["evaluate", "prepare", "pretrain", "finetune", "predict", "experiment", "demo"])
def test_foreign_non_empty_folder_is_never_written(w, capsys, tmp_path, command):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    args = {
        "evaluate": ["evaluate", "--ckpt", w.model, "--out", mine, "--overwrite"],
        "prepare": ["prepare", "generic", "--src", w.raw, "--out", mine, "--overwrite"],
        "pretrain": ["pretrain", *PRE, "--data", w.prep, "--out", mine, "--overwrite"],
        "finetune": ["finetune", *FT, "--data", w.prep, "--out", mine, "--overwrite"],
        "predict": ["predict", "--ckpt", w.model, w.raw / "images" / "scene_00.tif", "--out", mine, "--overwrite"],
        "experiment": ["experiment", "--config", "experiment_cpu", f"data={w.prep}", f"out={mine}", "fractions=[1.0]"],
        "demo": ["demo", "--quick", "--data", w.prep, "--out", mine],
    }[command]
    refused(capsys, args, mine, "not made by glcnet", watch=[tmp_path, *world(w)])


@pytest.mark.parametrize("command", ["evaluate", "prepare", "pretrain", "predict", "experiment"])
def test_output_of_another_command_is_not_replaced_even_with_overwrite(w, capsys, command):
    args = {
        "evaluate": ["evaluate", "--ckpt", w.model, "--out", w.pre, "--overwrite"],
        "prepare": ["prepare", "generic", "--src", w.raw, "--out", w.ft, "--overwrite"],
        "pretrain": ["pretrain", *PRE, "--data", w.prep, "--out", w.ft, "--overwrite"],
        "predict": ["predict", "--ckpt", w.model, w.raw / "images" / "scene_00.tif", "--out", w.pre],
        "experiment": ["experiment", "--config", "experiment_cpu", f"data={w.prep}", f"out={w.pre}", "fractions=[1.0]"],
    }[command]
    refused(capsys, args, "holds the output of glcnet", watch=world(w))


def test_prepare_never_replaces_its_source(w, capsys, tmp_path):
    refused(capsys, ["prepare", "generic", "--src", w.raw, "--out", w.raw, "--overwrite"], "is the input",
            watch=[w.raw])
    refused(capsys, ["prepare", "generic", "--src", w.raw / "images", "--out", w.raw, "--overwrite"],
            "contains the input", watch=[w.raw])


def test_prepare_replaces_its_own_output_with_overwrite(w, capsys, tmp_path):
    out = copy(w.prep, tmp_path / "prep")
    args = ["prepare", "generic", "--src", w.raw, "--out", out, "--tile-size", "64", "--fractions", "1.0"]
    refused(capsys, args, "--overwrite", watch=[out])
    assert run(capsys, *args, "--overwrite")[0] == 0
    assert json.loads((out / "splits.json").read_text())["labelled"].keys() == {"1.0"} and not leftovers(tmp_path)


def test_finetune_never_writes_into_its_init_run(w, capsys):
    refused(capsys, ["finetune", *FT, "--data", w.prep, "--init", w.pre, "--out", w.pre], "input", watch=world(w))


def test_pretrain_into_the_data_set_is_refused(w, capsys):
    refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", w.prep], "is the input", watch=world(w))


def test_predict_adds_to_its_folder_but_replaces_maps_only_with_overwrite(w, capsys, tmp_path):
    out = tmp_path / "maps"
    scene = w.raw / "images" / "scene_00.tif"
    base = ["predict", "--ckpt", w.model, "--out", out, "--window", "64", "--stride", "64", "--no-progress"]
    assert run(capsys, *base, scene)[0] == 0
    assert run(capsys, *base, w.raw / "images" / "scene_01.tif")[0] == 0  # another input: added
    refused(capsys, [*base, scene], "scene_00_pred", "--overwrite", watch=[tmp_path, *world(w)])
    assert run(capsys, *base, scene, "--overwrite")[0] == 0


@pytest.mark.parametrize("command", ["benchmark", "probe"])
def test_json_outputs_never_replace_a_foreign_file(w, capsys, tmp_path, command):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    args = {"benchmark": ["benchmark", "views", "--json", notes],
            "probe": ["probe", "--ckpt", "none", "--data", w.prep, "--fraction", "1.0", "--out", notes]}[command]
    refused(capsys, args, notes, "not written by glcnet", watch=[tmp_path, *world(w)])


def test_json_output_into_a_pipe_is_refused_not_waited_on(w, capsys, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    refused(capsys, ["probe", "--ckpt", "none", "--data", w.prep, "--fraction", "1.0", "--out", fifo], fifo,
            "not a regular file")
    (tmp_path / "w.pt").write_bytes(b"")
    os.mkfifo(tmp_path / "w.json")  # export's sidecar FILE.json is a pipe
    refused(capsys, ["export", w.ft, "--format", "smp", "--out", tmp_path / "w.pt", "--overwrite"],
            tmp_path / "w.json", "not a regular file")


def test_export_never_replaces_an_input_or_a_foreign_file(w, capsys, tmp_path):
    refused(capsys, ["export", w.ft, "--format", "smp", "--out", w.model, "--overwrite"], w.model, "is the input",
            watch=world(w))
    mine = tmp_path / "weights.pt"
    mine.write_bytes(b"my own weights")
    refused(capsys, ["export", w.ft, "--format", "smp", "--out", mine, "--overwrite"], mine, "not written by glcnet",
            watch=[tmp_path, *world(w)])


def test_out_that_is_a_file_is_refused(w, capsys, tmp_path):
    f = tmp_path / "run"
    f.write_text("not a folder")
    refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", f], f, "is a file", watch=[tmp_path])


def test_resume_and_overwrite_together_are_refused(w, capsys, tmp_path):
    pre = copy(w.pre, tmp_path / "pre")
    refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", pre, "--resume", "--overwrite"],
            "--resume", "--overwrite", watch=[tmp_path])


def test_prepare_removes_the_temp_folder_of_its_own_killed_run(capsys, tmp_path):
    raw = generate_scenes(tmp_path / "raw", n_scenes=3, size=128, seed=0)
    out = tmp_path / "prep"
    args = ["prepare", "generic", "--src", raw, "--out", out, "--tile-size", "64", "--classes", ",".join(CLASSES)]
    stall = ("import sys, time; import numpy as np; save = np.save; "  # the first array written, then a long wait
             "np.save = lambda *a, **k: (save(*a, **k), time.sleep(600)); "
             "from glcnet.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.Popen([sys.executable, "-c", stall, *map(str, args)], stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list(tmp_path.glob(".prep.tmp-*/images/*.npy")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.kill()  # SIGKILL: nothing can clean up
    p.wait()
    killed = list(tmp_path.glob(".prep.tmp-*"))
    assert len(killed) == 1 and list(killed[0].glob("images/*.npy"))
    foreign = tmp_path / ".prep.tmp-mine"  # the same name pattern, not glcnet's: kept
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    running = tmp_path / ".prep.tmp-running"  # a prepare whose process is alive (this one): kept
    running.mkdir()
    (running / ".glcnet.json").write_text(json.dumps({"kind": "prepare", "pid": os.getpid()}))
    code, _, err = run(capsys, *args)
    assert code == 0, err
    said = [ln for ln in err.splitlines() if "removed" in ln]
    assert len(said) == 1 and str(killed[0]) in said[0] and f"pid {p.pid}" in said[0], err
    assert not killed[0].exists() and foreign.is_dir() and running.is_dir() and (out / "dataset.json").is_file()


def test_benchmark_json_to_stdout_in_a_pipe_never_hangs(tmp_path):
    args = ["benchmark", "views", "--batch", "2", "--batches", "1", "--warmup", "0", "--tile", "64", "--size", "48",
            "--patch-size", "8", "--json", "/dev/stdout"]
    p = subprocess.run([sys.executable, "-m", "glcnet.cli", *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)  # stdout holds the JSON alone; the figures went to stderr
    assert res["glcnet"] == "benchmark views" and res["speedup"] > 0 and "speed-up" in p.stderr
    refused_gpu = subprocess.run([sys.executable, "-m", "glcnet.cli", "benchmark", "gpu", "--device", "cpu", "--tiny",
                                  "--json", "/dev/stdout"], capture_output=True, text=True, timeout=120)
    assert refused_gpu.returncode == 2 and refused_gpu.stdout == "", refused_gpu.stderr
    assert refused_gpu.stderr.strip() == "error: --json /dev/stdout: give a file; the figures are rewritten after " \
                                        "every section"


@pytest.mark.parametrize("args,says", [
    (["--sizes", "2000,big"], "--sizes"),
    (["--sizes", "0"], "--sizes"),
    (["--window", "0"], "--window"),
    (["--stride", "0"], "--stride"),
    (["--batch-size", "0"], "--batch-size"),
    (["--classes", "0"], "--classes"),
    pytest.param(["--device", "cuda"], "no CUDA GPU", marks=pytest.mark.skipif(HAS_GPU, reason="has a GPU")),
])
def test_benchmark_predict_refuses_bad_arguments_in_one_line(capsys, tmp_path, args, says):
    refused(capsys, ["benchmark", "predict", "--sizes", "64", "--window", "64", "--stride", "64",
                     "--encoder", "tu-mobilenetv3_small_050", *args, "--json", tmp_path / "b.json"],
            says, watch=[tmp_path])
    assert not list(tmp_path.iterdir())


# ============================================================================= 2. signals
def test_sigterm_stops_pretraining_at_a_step_with_a_checkpoint_then_resume_finishes(w, capsys, tmp_path):
    out = tmp_path / "pre"
    args = ["pretrain", *PRE, "--data", w.prep, "--out", out, "optim.epochs=100", "trainer.num_workers=1"]
    p = cli_process(*args)
    wait_for(out / "checkpoints" / "last.ckpt", p)  # one epoch done: a worker, a step, a checkpoint
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    stop_s = time.time() - t0
    print(f"SIGTERM -> exit in {stop_s:.2f} s")
    assert p.returncode == 143, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted by SIGTERM at epoch") and "checkpoint saved" in line and "--resume" in line
    assert not (out / "pretrained.pt").exists(), "an unfinished run must not look finished"
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert f"step {ckpt['global_step']}" in line and not leftovers(tmp_path)
    epochs = ckpt["epoch"] + 2
    assert run(capsys, *args[:-2], f"optim.epochs={epochs}", "--resume")[0] == 0
    assert torch.load(out / "pretrained.pt", weights_only=True)["epochs"] == epochs


def test_sigint_stops_finetuning_without_a_model(w, tmp_path):
    out = tmp_path / "ft"
    p = cli_process("finetune", *FT, "--data", w.prep, "--out", out, "optim.epochs=100")
    wait_for(out / "checkpoints" / "last.ckpt", p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted by SIGINT")
    assert not (out / "model.pt").exists() and not (out / "model_last.pt").exists()
    assert (out / "checkpoints" / "last.ckpt").is_file() and not leftovers(tmp_path)


def test_sigterm_stops_an_experiment_without_finishing_its_cell(w, tmp_path):
    out = tmp_path / "exp"
    ft = [f"finetune.{a}" for a in FT[4:]]
    p = cli_process("experiment", "--config", "experiment_cpu", f"data={w.prep}", f"out={out}", "methods=[none]",
                    "fractions=[1.0]", "seeds=[0]", *ft, "finetune.optim.epochs=100",
                    "pretrain.model.encoder=tu-mobilenetv3_small_050", "pretrain.model.aspp_channels=16")
    deadline = time.time() + 300
    while not list(out.glob("cells/*/finetune/checkpoints/last.ckpt")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted by SIGTERM") and "continue with: glcnet experiment" in line
    assert not list(out.glob("cells/*/result.json")) and list(out.glob("cells/*/finetune/checkpoints/last.ckpt"))


def test_signal_outside_training_leaves_no_partial_report(w, capsys, tmp_path, monkeypatch):
    import glcnet.finetune.evaluate as evaluate

    def scene_figure_then_sigterm(*a, **k):  # the first scene's figure is being written
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(evaluate, "scene_figure", scene_figure_then_sigterm)
    out = tmp_path / "report"
    code, _, err = run(capsys, "evaluate", "--ckpt", w.model, "--out", out, "--window", "64", "--stride", "64")
    assert code == 143 and err.strip().splitlines()[-1].startswith("interrupted by SIGTERM")
    assert not out.exists() and not leftovers(tmp_path)


def test_experiment_with_a_failed_cell_exits_nonzero(w, capsys, tmp_path):
    out = tmp_path / "exp"
    code, _, err = run(capsys, "experiment", "--config", "experiment_cpu", f"data={w.prep}", f"out={out}",
                       "methods=[none]", "fractions=[1.0]", "seeds=[0]", "finetune.crop=128")
    assert code == 1 and "1 cell(s) failed" in err and "error.txt" in err and "crop 128" in err
    assert list(out.glob("cells/*/error.txt"))


# ============================================================================= 3. disk and own files
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(w, tmp_path):
    pre = copy(w.pre, tmp_path / "pre")
    before = snapshot(pre / "checkpoints")
    limit = (pre / "checkpoints" / "last.ckpt").stat().st_size // 2  # the next checkpoint cannot be written

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = cli_process("pretrain", *PRE, "--data", w.prep, "--out", pre, "optim.epochs=2", "--resume",
                    preexec_fn=small_disk)
    _, err = p.communicate(timeout=300)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert p.returncode == 1, err
    assert lines[-1].startswith("error: ") and "last.ckpt" in lines[-1] and "File too large" in lines[-1]
    assert snapshot(pre / "checkpoints") == before and not leftovers(tmp_path)


def test_full_disk_in_prepare_leaves_nothing(w, capsys, tmp_path, monkeypatch):
    import errno

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "prep"
    code, _, err = run(capsys, "prepare", "generic", "--src", w.raw, "--out", out, "--tile-size", "64")
    assert code == 1 and err.strip().splitlines()[-1].startswith(f"error: {out}/images/")
    assert "No space left on device" in err and not out.exists() and not leftovers(tmp_path)


def test_full_disk_in_evaluate_leaves_nothing(w, capsys, tmp_path, monkeypatch):
    import errno

    import glcnet.utils.atomic as atomic

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "write_bytes", full)
    out = tmp_path / "report"
    code, _, err = run(capsys, "evaluate", "--ckpt", w.model, "--out", out, "--window", "64", "--stride", "64")
    assert code == 1 and "No space left on device" in err and not out.exists() and not leftovers(tmp_path)


def small_disk(limit: int):
    """``preexec_fn`` of a process whose files cannot grow past ``limit`` bytes (EFBIG, as a full disk)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_full_disk_in_prepare_names_the_file_and_the_cause(tmp_path):
    raw = generate_scenes(tmp_path / "raw", n_scenes=3, size=128, seed=0)
    out = tmp_path / "prep"
    p = cli_process("prepare", "generic", "--src", raw, "--out", out, "--tile-size", "64", "--classes",
                    ",".join(CLASSES), preexec_fn=small_disk(20_000))  # a 4 x 128 x 128 image does not fit
    _, err = p.communicate(timeout=300)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert p.returncode == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {out}/images/scene_") and ".npy: File too large" in lines[0]
    assert not out.exists() and not leftovers(tmp_path)


def test_full_disk_in_predict_leaves_no_map(tiny_model, tmp_path):
    """GDAL reports a write that fails when the GeoTIFF closes only on stderr: the map must not look finished."""
    scene = write_tif(tmp_path / "in" / "scene.tif", np.random.default_rng(0).integers(0, 256, (4, 256, 256),
                                                                                      dtype=np.uint8))
    out = tmp_path / "maps"
    p = cli_process("predict", "--ckpt", tiny_model, scene, "--out", out, "--window", "64", "--stride", "64",
                    "--probs", "--no-progress", preexec_fn=small_disk(5_000))
    _, err = p.communicate(timeout=300)
    line = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert p.returncode == 1, err
    assert line.startswith(f"error: {out}/scene_") and "not written completely" in line and "None" not in line
    assert not list(out.glob("scene_*")) and not leftovers(tmp_path)


def test_write_error_without_errno_names_the_file_and_its_message(tmp_path, capsys):
    from glcnet.utils.atomic import atomic_path

    target = tmp_path / "a.bin"
    with pytest.raises(OSError) as e, atomic_path(target):
        raise OSError("480000 requested and 151424 written")  # numpy's short write: no errno, no file
    assert e.value.filename == str(target)
    assert e.value.strerror == "480000 requested and 151424 written (nothing was written under this name)"
    assert not target.exists() and not leftovers(tmp_path)


def test_resume_from_a_truncated_checkpoint_is_refused_before_touching_the_run(w, capsys, tmp_path):
    pre = copy(w.pre, tmp_path / "pre")
    last = pre / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", pre, "--resume"], last, "damaged",
            watch=[tmp_path])
    (pre / "checkpoints" / "last.ckpt.sha256").unlink()  # without its checksum (an earlier version's file)
    refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", pre, "--resume"], last, "not a readable",
            watch=[tmp_path])


@pytest.mark.parametrize("change,key", [(["--method", "simclr"], "method.name"),
                                        (["model.encoder=resnet18"], "model.encoder"),
                                        (["views.size=64"], "views.size")])
def test_pretrain_resume_with_other_settings_is_refused(w, capsys, tmp_path, change, key):
    pre = copy(w.pre, tmp_path / "pre")
    refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", pre, "--resume", *change], pre, key,
            "the run was started with", watch=[tmp_path])


def test_finetune_resume_with_another_fraction_is_refused(w, capsys, tmp_path):
    ft = copy(w.ft, tmp_path / "ft")
    refused(capsys, ["finetune", *FT, "--data", w.prep, "--init", w.pre, "--out", ft, "--resume", "--fraction", "0.5"],
            "fraction", watch=[tmp_path, *world(w)])


def test_resume_of_nothing_creates_nothing(w, capsys, tmp_path):
    refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", tmp_path / "new", "--resume"], "nothing to resume",
            watch=[tmp_path])
    assert not (tmp_path / "new").exists()


def test_a_second_process_cannot_write_a_run_folder(w, capsys, tmp_path):
    pre = copy(w.pre, tmp_path / "pre")
    hold = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(pre)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", pre, "--resume", "optim.epochs=2"],
                "another glcnet process", watch=[tmp_path])
    finally:
        holder.kill()
        holder.wait()


def test_unwritable_output_is_one_line_before_any_work(w, capsys, tmp_path):
    refused(capsys, ["prepare", "generic", "--src", w.raw, "--out", "/sys/glcnet-test"], "/sys", "cannot be written")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused(capsys, ["evaluate", "--ckpt", w.model, "--out", blocker / "report"], "is a file", watch=[tmp_path])


@pytest.mark.parametrize("args,key", [
    (["pretrain", *PRE, "optim.lr=0"], "optim.lr"),
    (["pretrain", *PRE, "optim.lr=.nan"], "optim.lr"),
    (["pretrain", *PRE, "optim.epochs=-1"], "optim.epochs"),
    (["finetune", *FT, "trainer.batch_size=0"], "trainer.batch_size"),
    (["finetune", *FT, "--fraction", "0"], "fraction"),
    (["evaluate", "--batch-size", "0"], "--batch-size"),
    (["predict", "--window", "0"], "--window"),
    (["prepare", "--tile-size", "0"], "tile size"),
])
def test_non_positive_numbers_are_one_line_and_leave_no_folder(w, capsys, tmp_path, args, key):
    out = tmp_path / "out"
    extra = {"pretrain": ["--data", w.prep], "finetune": ["--data", w.prep],
             "evaluate": ["--ckpt", w.model], "predict": ["--ckpt", w.model, w.raw / "images" / "scene_00.tif"],
             "prepare": ["generic", "--src", w.raw]}[args[0]]
    refused(capsys, [args[0], *extra, *args[1:], "--out", out], key, watch=[tmp_path, *world(w)])
    assert not out.exists()


@pytest.mark.skipif(HAS_GPU, reason="checks the machine without a GPU")
@pytest.mark.parametrize("command", ["pretrain", "finetune", "predict", "devices"])
def test_gpu_asked_for_where_there_is_none(w, capsys, tmp_path, command):
    out = tmp_path / "out"
    args, says = {"pretrain": (["pretrain", *PRE, "--data", w.prep, "trainer.accelerator=gpu"], "no CUDA GPU"),
                  "finetune": (["finetune", *FT, "--data", w.prep, "trainer.accelerator=gpu"], "no CUDA GPU"),
                  "predict": (["predict", "--ckpt", w.model, w.raw / "images" / "scene_00.tif", "--device", "cuda"],
                              "no CUDA GPU"),
                  "devices": (["pretrain", *PRE, "--data", w.prep, "trainer.devices=4"], "no GPU")}[command]
    refused(capsys, [*args, "--out", out], says, watch=[tmp_path])
    assert not out.exists()


# ============================================================================= 4. input values
def _float_scenes(root: Path, nodata_tag, fill: float = -9999) -> Path:
    """Three 64 px float32 scenes of reflectance 0..1 with a ``fill`` (no-data) corner, index masks 0/1."""
    rng = np.random.default_rng(0)
    for i in range(3):
        img = rng.uniform(0, 1, (2, 64, 64)).astype(np.float32)
        img[:, :16, :16] = fill
        write_tif(root / "images" / f"s{i}.tif", img, nodata=nodata_tag)
        mask = (rng.uniform(size=(64, 64)) > 0.5).astype(np.uint8)
        Image.fromarray(mask).save((root / "masks").mkdir(parents=True, exist_ok=True) or root / "masks" / f"s{i}.png")
    return root


@pytest.mark.parametrize("how", ["tag", "--nodata"])
def test_float_nodata_leaves_statistics_and_labels(capsys, tmp_path, how):
    src = _float_scenes(tmp_path / "raw", -9999 if how == "tag" else None)
    out = tmp_path / "prep"
    extra = ["--nodata", "-9999"] if how == "--nodata" else []
    assert run(capsys, "prepare", "generic", "--src", src, "--out", out, "--classes", "a,b", "--tile-size", "32",
               "--split-ratios", "0.34,0.33,0.33", *extra)[0] == 0
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["nodata"] == [-9999.0, -9999.0]
    for lo, hi in meta["value_range"]:
        assert 0 <= lo < 0.05 and 0.95 < hi <= 1  # -9999 does not set the range
    for m in meta["mean"]:
        assert 0.45 < m < 0.55  # the mean of the valid pixels, not pulled to 0 by no-data
    mask = np.load(out / "masks" / "s0.npy")
    assert (mask[:16, :16] == 255).all() and (mask[16:] != 255).all()


@pytest.mark.parametrize("fill", [-9999.0, -32768.0, float(np.finfo(np.float32).min), 1e20])
def test_undeclared_float_nodata_fill_is_a_warning(capsys, tmp_path, fill):
    src = _float_scenes(tmp_path / "raw", None, fill=fill)
    args = ["prepare", "generic", "--src", src, "--classes", "a,b", "--tile-size", "32", "--split-ratios",
            "0.34,0.33,0.33"]
    code, _, err = run(capsys, *args, "--out", tmp_path / "p1")
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert code == 0 and len(warnings) == 2, err  # one line per band, for all three files
    text = f"{fill:g}" if np.float32(f"{fill:g}") == np.float32(fill) else str(np.float32(fill))
    for band, line in zip(["B1", "B2"], warnings):
        assert f"{src}/images/s" in line and "(and 2 other file(s))" in line and f"band {band} has 6.2%" in line
        assert f"at {text}," in line and f"--nodata={text} declares it" in line
    code, _, err = run(capsys, *args, "--out", tmp_path / "p2", f"--nodata={text}")  # as the warning says
    assert code == 0 and "warning" not in err, err
    meta = json.loads((tmp_path / "p2" / "dataset.json").read_text())
    assert all(0.45 < m < 0.55 for m in meta["mean"]) and np.float32(meta["nodata"][0]) == np.float32(fill)


def test_nodata_outside_the_dtype_is_refused(capsys, tmp_path):
    src = tmp_path / "raw"
    write_tif(src / "images" / "a.tif", np.zeros((1, 64, 64), np.uint16))
    Image.fromarray(np.zeros((64, 64), np.uint8)).save((src / "masks").mkdir() or src / "masks" / "a.png")
    refused(capsys, ["prepare", "generic", "--src", src, "--out", tmp_path / "p", "--nodata", "70000",
                     "--classes", "a", "--tile-size", "32"], "--nodata", "uint16", watch=[tmp_path])


def test_predict_refuses_a_uint16_raster_for_a_uint8_model_unless_told(w, capsys, tmp_path):
    scene = write_tif(tmp_path / "u16.tif", np.full((4, 64, 64), 3000, np.uint16))
    args = ["predict", "--ckpt", w.model, scene, "--out", tmp_path / "maps", "--window", "64", "--stride", "64",
            "--no-progress"]
    refused(capsys, args, scene, "uint16", "uint8", "--value-range", watch=[tmp_path, *world(w)])
    assert not (tmp_path / "maps").exists()
    assert run(capsys, *args, "--value-range", "0,65535")[0] == 0 and (tmp_path / "maps" / "u16_pred.tif").is_file()


@pytest.fixture
def float_model(w, tmp_path) -> Path:
    """The module's model.pt, told it was trained on float32 reflectance 0..1 with no-data -9999."""
    ckpt = torch.load(w.model, weights_only=True)
    ckpt.update(dtype="float32", value_range=[[0.0, 1.0]] * 4, nodata=[-9999.0] * 4)
    torch_save(ckpt, tmp_path / "float_model.pt")
    return tmp_path / "float_model.pt"


def test_predict_refuses_values_far_outside_the_models_range(w, capsys, tmp_path, float_model):
    scene = write_tif(tmp_path / "dn.tif", np.full((4, 64, 64), 800, np.float32))  # digital numbers, not 0..1
    refused(capsys, ["predict", "--ckpt", float_model, scene, "--out", tmp_path / "maps"], scene,
            "far outside the model's range", watch=[tmp_path])


def test_predict_writes_nodata_where_the_input_has_none(w, capsys, tmp_path, float_model):
    arr = np.random.default_rng(0).uniform(0, 1, (4, 64, 64)).astype(np.float32)
    arr[:, 40:, :20] = -5
    scene = write_tif(tmp_path / "refl.tif", arr, nodata=-5)  # the input's own tag wins over the model's
    assert run(capsys, "predict", "--ckpt", float_model, scene, "--out", tmp_path / "maps", "--window", "64",
               "--stride", "64", "--probs", "--no-progress")[0] == 0
    with rasterio.open(tmp_path / "maps" / "refl_pred.tif") as d:
        pred = d.read(1)
        assert d.nodata == 255
    assert (pred[40:, :20] == 255).all() and (pred[:40] < 6).all()
    with rasterio.open(tmp_path / "maps" / "refl_probs.tif") as d:
        assert (d.read()[:, 40:, :20] == 0).all()


@pytest.mark.parametrize("value_range", ["0,nan", "0,inf", "nan,255"])
def test_predict_refuses_a_value_range_that_is_not_finite(tiny_model, capsys, tmp_path, value_range):
    scene = write_tif(tmp_path / "in" / "scene.tif", np.zeros((4, 64, 64), np.uint8))
    refused(capsys, ["predict", "--ckpt", tiny_model, scene, "--out", tmp_path / "maps", "--window", "64",
                     "--stride", "64", "--value-range", value_range], f"--value-range {value_range}", "finite", watch=[tmp_path])
    assert not (tmp_path / "maps").exists()


def _scenes_with_tif_masks(root: Path, mask_value=None, image_geo=None, mask_geo=None) -> Path:
    """Three 64 px uint8 scenes with GeoTIFF masks (``mask_value``: a float mask of that fill pattern);
    ``*_geo``: (crs, transform) or None."""
    rng = np.random.default_rng(0)
    for i in range(3):
        for name, arr, geo in [("images", rng.integers(0, 256, (3, 64, 64), dtype=np.uint8), image_geo),
                               ("masks", rng.integers(0, 2, (1, 64, 64)).astype(np.uint8) if mask_value is None
                                else np.where(rng.uniform(size=(1, 64, 64)) > 0.5, *mask_value).astype(np.float32),
                                mask_geo)]:
            path = root / name / f"s{i}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            crs, transform = geo or (None, None)
            with rasterio.open(path, "w", driver="GTiff", count=1 if name == "masks" else 3, height=64, width=64,
                               dtype=arr.dtype, crs=crs, transform=transform) as dst:
                dst.write(arr)
    return root


@pytest.mark.parametrize("mask_geo,says", [
    (("EPSG:32633", "shifted"), "geotransform"),
    (("EPSG:32632", "same"), "CRS EPSG:32632"),
])
def test_mask_georeferenced_unlike_its_image_is_refused(capsys, tmp_path, mask_geo, says):
    from affine import Affine

    grid = Affine(0.5, 0, 366000.0, 0, -0.5, 5808000.0)
    crs, where = mask_geo
    src = _scenes_with_tif_masks(tmp_path / "raw", image_geo=("EPSG:32633", grid),
                                 mask_geo=(crs, grid @ Affine.translation(3, 0) if where == "shifted" else grid))
    line = refused(capsys, ["prepare", "generic", "--src", src, "--out", tmp_path / "p", "--classes", "a,b",
                            "--tile-size", "32"], says, watch=[tmp_path])
    assert "masks/s0.tif" in line and "images/s0.tif" in line  # both files
    # a mask without georeferencing is taken as aligned with its image
    src = _scenes_with_tif_masks(tmp_path / "plain", image_geo=("EPSG:32633", grid))
    assert run(capsys, "prepare", "generic", "--src", src, "--out", tmp_path / "ok", "--classes", "a,b",
               "--tile-size", "32", "--split-ratios", "0.34,0.33,0.33")[0] == 0


def test_float_mask_with_fractions_is_refused_not_truncated(capsys, tmp_path):
    def prepare(src, out, *extra):
        return ["prepare", "generic", "--src", src, "--out", out, "--tile-size", "32", "--split-ratios",
                "0.34,0.33,0.33", *extra]

    src = _scenes_with_tif_masks(tmp_path / "raw", mask_value=(0.7, 1.6))
    refused(capsys, prepare(src, tmp_path / "p", "--classes", "a,b"), f"{src}/masks/s", "non-integer values such as",
            "--mask-threshold", watch=[tmp_path])
    assert run(capsys, *prepare(src, tmp_path / "t", "--mask-threshold", "1"))[0] == 0  # a soft mask, binarised
    assert set(np.unique(np.load(tmp_path / "t" / "masks" / "s0.npy"))) == {0, 1}
    whole = _scenes_with_tif_masks(tmp_path / "whole", mask_value=(0.0, 1.0))  # float, but whole class values
    assert run(capsys, *prepare(whole, tmp_path / "w", "--classes", "a,b"))[0] == 0


def test_evaluate_refuses_a_data_set_of_another_dtype(w, capsys, tmp_path):
    prep = copy(w.prep, tmp_path / "prep")
    meta = json.loads((prep / "dataset.json").read_text())
    (prep / "dataset.json").write_text(json.dumps({**meta, "dtype": "uint16", "value_range": [[0, 4095]] * 4}))
    refused(capsys, ["evaluate", "--ckpt", w.model, "--data", prep], prep / "dataset.json", "uint16",
            watch=[tmp_path, *world(w)])


def test_model_records_its_data_set_by_absolute_path(w, capsys, tmp_path, monkeypatch):
    ckpt = torch.load(w.model, weights_only=True)
    assert Path(ckpt["data"]).is_absolute() and Path(ckpt["init"]).is_absolute()
    monkeypatch.chdir(tmp_path)  # another working directory: the model still finds its data set
    assert run(capsys, "evaluate", "--ckpt", w.model, "--out", "report", "--window", "64", "--stride", "64")[0] == 0
    moved = dict(ckpt, data=str(tmp_path / "gone"))
    torch_save(moved, tmp_path / "moved.pt")
    refused(capsys, ["evaluate", "--ckpt", tmp_path / "moved.pt"], "gone", "is not there", "--data",
            watch=[tmp_path])


def _palette_scenes(root: Path, colors) -> Path:
    rng = np.random.default_rng(1)
    for i in range(3):
        write_tif(root / "images" / f"s{i}.tif", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
        idx = np.zeros((64, 64), np.uint8)
        idx[:, 32:] = 1
        im = Image.fromarray(idx, mode="P")
        im.putpalette([v for c in colors for v in c] + [0] * (768 - 3 * len(colors)))
        (root / "masks").mkdir(parents=True, exist_ok=True)
        im.save(root / "masks" / f"s{i}.png")
    return root


def test_palette_png_colour_masks_decode_with_a_legend(capsys, tmp_path):
    src = _palette_scenes(tmp_path / "raw", [(0, 0, 255), (255, 255, 0)])
    legend = tmp_path / "legend.csv"
    legend.write_text("name,r,g,b\nroad,255,255,0\nwater,0,0,255\n")
    out = tmp_path / "prep"
    assert run(capsys, "prepare", "generic", "--src", src, "--out", out, "--legend", legend, "--tile-size", "32",
               "--split-ratios", "0.34,0.33,0.33")[0] == 0
    mask = np.load(out / "masks" / "s0.npy")
    assert (mask[:, :32] == 1).all() and (mask[:, 32:] == 0).all()  # by colour, not by palette index


def test_ambiguous_legend_is_refused(capsys, tmp_path):
    src = _palette_scenes(tmp_path / "raw", [(0, 0, 255), (255, 255, 0)])
    legend = tmp_path / "legend.csv"
    legend.write_text("road,255,255,0\nlane,255,255,0\nwater,0,0,255\n")
    refused(capsys, ["prepare", "generic", "--src", src, "--out", tmp_path / "p", "--legend", legend],
            legend, "(255, 255, 0)", "unambiguously", watch=[tmp_path])


def test_binary_0_255_masks_without_threshold_are_refused(capsys, tmp_path):
    src = tmp_path / "raw"
    for i in range(3):
        write_tif(src / "images" / f"s{i}.tif", np.zeros((3, 64, 64), np.uint8))
        m = np.zeros((64, 64), np.uint8)
        m[:, 40:] = 255
        (src / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(m).save(src / "masks" / f"s{i}.png")
    refused(capsys, ["prepare", "generic", "--src", src, "--out", tmp_path / "p", "--classes", "background,road",
                     "--tile-size", "32"], "0 and 255", "--mask-threshold", watch=[tmp_path])
    assert not (tmp_path / "p").exists()


def test_empty_class_is_a_warning(capsys, tmp_path):
    src = _palette_scenes(tmp_path / "raw", [(0, 0, 0), (1, 1, 1)])  # indices 0 and 1 only
    code, _, err = run(capsys, "prepare", "generic", "--src", src, "--out", tmp_path / "p", "--classes", "a,b,ghost",
                       "--tile-size", "32", "--split-ratios", "0.34,0.33,0.33")
    assert code == 0 and "warning: class 'ghost' has no labelled pixel" in err


# ============================================================================= 5. syntax
def test_overrides_may_follow_options(w, capsys, tmp_path):
    refused(capsys, ["pretrain", "--data", w.prep, "optim.lr=0", "--out", tmp_path / "x", "--method", "simclr"],
            "optim.lr", watch=[tmp_path])


def test_yaml_with_a_key_given_twice_is_refused(capsys, tmp_path):
    config = tmp_path / "pretrain.yaml"
    config.write_text("optim:\n  lr: 0.1\n  epochs: 2\n  lr: 0.5\n")  # which lr did the user mean?
    refused(capsys, ["pretrain", "--config", config, "--data", tmp_path / "data", "--out", tmp_path / "run"],
            config, "'lr'", "line 4", "line 2", watch=[tmp_path])
    legend = tmp_path / "legend.yaml"
    legend.write_text("road: [255, 255, 0]\nwater: [0, 0, 255]\nroad: [255, 0, 0]\n")
    src = _palette_scenes(tmp_path / "raw", [(0, 0, 255), (255, 255, 0)])
    refused(capsys, ["prepare", "generic", "--src", src, "--out", tmp_path / "p", "--legend", legend],
            legend, "'road'", "line 3", watch=[tmp_path])


def test_method_entries_with_overrides_parse_on_the_command_line(w, capsys, tmp_path):
    out = tmp_path / "e"
    base = ["experiment", "--config", "experiment_cpu", f"data={w.prep}", f"out={out}", "fractions=[1.0]",
            "--only-table"]
    methods = "methods=[glcnet,glcnet[method.lam=0.25],glcnet[method.patch_size=8,views.p_blur=0]]"  # as in the README
    # parsed and checked: the refusal is the next check's (no experiment in --out), not the entries'
    refused(capsys, [*base, methods], "no experiment there", watch=[tmp_path])
    refused(capsys, [*base, "methods=[glcnet,glcnet[method.lam=2]]"], "method.lam", watch=[tmp_path])


# ----------------------------------------------------------------------------- part 2 (issue 29)
def test_overwrite_with_a_bad_setting_keeps_the_finished_run(w, capsys, tmp_path):
    ft = copy(w.ft, tmp_path / "ft")
    for bad, key in (("trainer.precision=bf17", "trainer.precision"), ("trainer.strategy=bogus", "trainer.strategy"),
                     ("seed=-1", "seed")):
        refused(capsys, ["finetune", *FT, "--data", w.prep, "--init", w.pre, "--out", ft, "--overwrite", bad],
                key, watch=[ft])
    assert not (tmp_path / ".ft.replacement").exists()


def test_overwrite_that_fails_while_training_keeps_the_finished_run(w, capsys, tmp_path):
    """A mask missing from the data set: fine-tuning fails in its first epoch; the earlier run is
    untouched, and the replacement, with no checkpoint, is gone."""
    prep, ft = copy(w.prep, tmp_path / "prep"), copy(w.ft, tmp_path / "ft")
    for m in (prep / "masks").glob("*.npy"):
        m.unlink()
    before = snapshot(ft)
    code, _, err = run(capsys, "finetune", *FT, "--data", prep, "--init", w.pre, "--out", ft, "--overwrite")
    assert code != 0 and snapshot(ft) == before, err
    assert not (tmp_path / ".ft.replacement").exists() and not leftovers(tmp_path)


def test_interrupted_overwrite_keeps_the_earlier_run_and_its_advice_resumes_the_replacement(w, capsys, tmp_path):
    import shlex

    ft = copy(w.ft, tmp_path / "ft")
    before = snapshot(ft)
    staged = tmp_path / ".ft.replacement"
    p = cli_process("finetune", *FT, "--data", w.prep, "--init", w.pre, "--out", ft, "--overwrite", "optim.epochs=4")
    wait_for(staged / "checkpoints" / "last.ckpt", p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 143, err
    assert snapshot(ft) == before  # the finished run, as it was
    advice = err.strip().splitlines()[-1]
    assert "the earlier run is untouched" in advice and "--overwrite" not in advice.split("with: ")[1], advice
    again = shlex.split(advice.split("with: ")[1].split(" (it takes")[0])
    assert again[:2] == ["glcnet", "finetune"] and again[-1] == "--resume"
    code, _, err = run(capsys, *again[1:])
    assert code == 0, err
    assert not staged.exists() and snapshot(ft) != before
    assert torch.load(ft / "model_last.pt", weights_only=True)["epoch"] == 3  # the replacement's 4 epochs


def test_overwrite_deletes_only_what_glcnet_provably_wrote(w, capsys, tmp_path):
    ft = copy(w.ft, tmp_path / "ft")
    (ft / "notes.txt").write_text("my notes")
    refused(capsys, ["finetune", *FT, "--data", w.prep, "--init", w.pre, "--out", ft, "--overwrite"],
            "notes.txt", "did not write", watch=[ft])
    # the right file names without our marker (an older version, or a user's folder): not proof
    (ft / "notes.txt").unlink()
    (ft / ".glcnet.json").unlink()
    refused(capsys, ["finetune", *FT, "--data", w.prep, "--init", w.pre, "--out", ft, "--overwrite"],
            ".glcnet.json", watch=[ft])


def test_resume_is_on_the_same_data_set_whatever_the_path_says(w, capsys, tmp_path):
    """--data is compared by identity, not as a string against the current folder: the same data set
    by another path resumes; a re-prepared one under the run's own relative path is refused."""
    here, there = tmp_path / "a", tmp_path / "b"
    shutil.copytree(w.prep, here / "prep")
    pre = tmp_path / "pre"
    p = subprocess.run([sys.executable, "-m", "glcnet.cli", "pretrain", *PRE, "--data", "prep", "--out", pre,
                        "trainer.max_steps=1"], cwd=here, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    saved = (pre / "config.yaml").read_text()
    assert f"data: {here / 'prep'}" in saved  # resolved when the run was made
    # another data set at the same relative path, seen from another folder
    assert cli_main(["prepare", "generic", "--src", str(w.raw), "--out", str(there / "prep"), "--classes",
                     ",".join(CLASSES), "--bands", ",".join(BANDS), "--tile-size", "64", "--seed", "7",
                     "--split-ratios", "0.6,0.2,0.2", "--unlabeled", str(w.raw / "unlabeled")]) == 0
    os.chdir(there)
    try:
        refused(capsys, ["pretrain", *PRE, "--data", "prep", "--out", pre, "--resume", "optim.epochs=2"],
                "not the data set the run was trained on", watch=[pre])
        code, _, err = run(capsys, "pretrain", *PRE, "--data", here / "prep", "--out", pre, "--resume",
                           "optim.epochs=2")
        assert code == 0, err
    finally:
        os.chdir(w.root)


def test_damaged_checkpoints_and_weights_are_refused(w, capsys, tmp_path):
    pre, ft = copy(w.pre, tmp_path / "pre"), copy(w.ft, tmp_path / "ft")
    for path in (pre / "checkpoints" / "last.ckpt", ft / "model.pt"):
        data = bytearray(path.read_bytes())
        n = min(100_000, len(data) // 4)
        data[len(data) // 2:len(data) // 2 + n] = bytes(n)  # zeroed in the middle: still a readable zip
        path.write_bytes(bytes(data))
    refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", pre, "--resume", "optim.epochs=2"],
            "last.ckpt", "damaged", watch=[pre])
    tif = write_tif(tmp_path / "in.tif", np.random.default_rng(0).integers(0, 255, (4, 64, 64), dtype=np.uint8))
    refused(capsys, ["predict", "--ckpt", ft / "model.pt", tif, "--out", tmp_path / "preds"], "model.pt", "damaged",
            watch=[ft])
    assert not (tmp_path / "preds").exists()


def test_reprepared_data_set_does_not_score_a_model_on_its_training_scenes(w, capsys, tmp_path):
    prep = copy(w.prep, tmp_path / "prep")
    model = tmp_path / "model.pt"
    shutil.copy(w.model, model)
    shutil.copy(w.model.with_name("model.pt.sha256"), tmp_path / "model.pt.sha256")
    assert cli_main(["prepare", "generic", "--src", str(w.raw), "--out", str(prep), "--overwrite", "--classes",
                     ",".join(CLASSES), "--bands", ",".join(BANDS), "--tile-size", "64", "--seed", "7",
                     "--split-ratios", "0.6,0.2,0.2", "--unlabeled", str(w.raw / "unlabeled")]) == 0
    ckpt = torch.load(model, weights_only=True)
    new = json.loads((prep / "splits.json").read_text())["scenes"]["test"]
    seen = set(ckpt["scenes"]["train"]) | set(ckpt["scenes"]["val"])
    assert seen & set(new), "the seed should move a training scene into the test split"
    refused(capsys, ["evaluate", "--ckpt", model, "--data", prep, "--split", "test", "--out", tmp_path / "ev"],
            "splits changed", "trained or selected on", watch=[prep, model])
    assert not (tmp_path / "ev").exists()


def test_a_running_run_is_named_by_the_process_that_holds_it(w, capsys, tmp_path):
    pre = copy(w.pre, tmp_path / "pre")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from glcnet import outputs; outputs.lock(Path(sys.argv[1])); "
        "print('held', flush=True); sys.stdin.read()"), str(pre)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (["--resume"], ["--overwrite"], []):
            line = refused(capsys, ["pretrain", *PRE, "--data", w.prep, "--out", pre, *args], f"pid {holder.pid}",
                           "is writing this folder")
            assert "stopped" not in line and "finished" not in line
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
