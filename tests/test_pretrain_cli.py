"""End to end: ``glcnet pretrain`` through the real CLI on real Potsdam RGB+NIR tiles.

Every method trains a few steps, its loss goes down, its embeddings do not collapse and
its exported weights load strictly into DeepLab; a run killed mid-way resumes and ends
with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import call_cli, run_cli
from glcnet.cli import main as cli_main
from glcnet.config import ModelConfig
from glcnet.models import build_model

GLCNET_M = ["method.queue_size=16", "method.patch_queue_size=64", "method.momentum=0.9", "method.bn_splits=1"]
SMALL = ["views.size=64", "model.aspp_channels=64", "method.patch_size=16", "trainer.batch_size=8", "trainer.num_workers=0",
         "trainer.progress=false", "trainer.log_every=1"]


@pytest.fixture(scope="module")
def potsdam(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pt") / "potsdam"
    run_cli("prepare", "potsdam", "--src", shared_data / "isprs" / "potsdam_rgbir", "--out", out, "--tile-size", "64")
    return out


def epoch_means(run: Path, key: str) -> list[float]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r[f"train/{key}_epoch"] for r in recs if f"train/{key}_epoch" in r]


@pytest.mark.parametrize("method,extra,first", [  # first: the epochs the last two are compared with
    ("glcnet", [], slice(0, 1)),
    ("simclr", ["trainer.tensorboard=true"], slice(0, 1)),
    # the queue starts as random unit vectors (an easy task) and is full of real keys after
    # one epoch (2 steps of 8): compare from there; faster momentum for a 12-step run
    ("mocov2", ["method.queue_size=16", "method.momentum=0.9"], slice(1, 2)),
    ("inpainting", [], slice(0, 1)),
    # jigsaw learns slowly: 2x2 tiles, 4 permutations, 40 steps (12 steps are noise around ln 4)
    ("jigsaw", ["method.jigsaw_permutations=4", "method.jigsaw_grid=2", "optim.epochs=20"], slice(0, 3)),
    # views made in a DataLoader worker; with the false-negative-aware local term (glcnet_fn's option)
    ("glcnet_fn", ["views.in_loader=true", "trainer.num_workers=1", "method.fn_topk=4"], slice(0, 1)),
    # dense methods of issue 17. GLCNet-M: queues of 16 style / 64 patch keys are full of real keys after one
    # epoch; plain BatchNorm, as split BatchNorm over sub-batches of 4 learns too slowly to show in 12 steps
    # (SplitBatchNorm: tests/test_momentum.py; mocov2 above runs it)
    ("glcnet_m", GLCNET_M, slice(1, 2)),
    ("vicregl", [], slice(0, 1)),
])
def test_method_learns_without_collapse(potsdam, tmp_path, method, extra, first, capsys):
    out = tmp_path / method
    rc = cli_main(["pretrain", "--config", "pretrain_cpu", "--data", str(potsdam), "--out", str(out),
                   "--method", method, "optim.epochs=6", *SMALL, *extra])
    assert rc == 0
    epochs = next((int(e.split("=")[1]) for e in extra if e.startswith("optim.epochs=")), 6)
    # not a terminal: no bar, the last epoch's line and the stage's line on stderr
    err = capsys.readouterr().err
    assert f"pretrain {method} epoch {epochs}/{epochs}: " in err and f"pretrain {method}: done, " in err and "\r" not in err
    if "trainer.tensorboard=true" in extra:  # tensorboard --logdir RUN shows the logged scalars
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(out / "tensorboard"))
        events.Reload()
        assert {"train/loss_epoch", "train/emb_std_epoch"} <= set(events.Tags()["scalars"])
        assert len(events.Scalars("train/loss_epoch")) == 6
    loss = epoch_means(out, "loss")
    assert len(loss) == epochs
    assert sum(loss[-2:]) / 2 < sum(loss[first]) / len(loss[first]), f"{method}: loss did not go down: {loss}"
    std = epoch_means(out, "emb_std")
    assert std[-1] > 0.02, f"{method}: embeddings collapsed (std {std})"
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["train/device/samples_per_sec"] for r in recs if "train/device/samples_per_sec" in r]
    assert len(rates) >= 6 and min(rates) > 0  # Lightning's ThroughputMonitor, every log_every steps
    ckpt = torch.load(out / "pretrained.pt", weights_only=True)
    assert ckpt["kind"] == "pretrained" and ckpt["method"] == method and ckpt["in_channels"] == 4
    net = build_model(ModelConfig(**ckpt["model"]), in_channels=4)  # the architecture it records
    net.load_state_dict(ckpt["state_dict"], strict=True)
    for f in ("config.yaml", "run.json", "checkpoints/last.ckpt"):
        assert (out / f).is_file()
    assert json.loads((out / "run.json").read_text())["seed"] == 0


def test_kill_and_resume_matches_uninterrupted_run(potsdam, tmp_path):
    args = ["pretrain", "--config", "pretrain_cpu", "--data", str(potsdam), "optim.epochs=5", *SMALL]
    ref = tmp_path / "ref"
    assert cli_main([*args, "--out", str(ref)]) == 0

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "glcnet.cli", *args, "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "no checkpoint appeared before the kill"
    killed_at = torch.load(last, weights_only=False)["epoch"]

    p = call_cli(*args, "--out", run, check=False)  # without --resume: refuses, keeps the run
    assert p.returncode == 2 and "--resume" in p.stderr and last.exists()

    assert cli_main([*args, "--out", str(run), "--resume"]) == 0
    assert killed_at < 4  # it really was interrupted before the end
    a = torch.load(ref / "pretrained.pt", weights_only=True)
    b = torch.load(run / "pretrained.pt", weights_only=True)
    assert a["epochs"] == b["epochs"] == 5
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, msg=f"{k} differs after resume")


def test_stop_and_resume_restores_queues_and_key_encoder(potsdam, tmp_path):
    """GLCNet-M stopped after its first epoch and resumed ends exactly as an uninterrupted run."""
    args = ["pretrain", "--config", "pretrain_cpu", "--data", str(potsdam), "--method", "glcnet_m", "optim.epochs=2",
            *SMALL, *GLCNET_M]
    ref, run = tmp_path / "ref", tmp_path / "stopped"
    assert cli_main([*args, "--out", str(ref)]) == 0
    assert cli_main([*args, "trainer.max_steps=2", "--out", str(run)]) == 0  # 2 steps = the first epoch
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["epoch"] == 0 and first["global_step"] == 2
    assert cli_main([*args, "--out", str(run), "--resume"]) == 0
    a = torch.load(ref / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert {"method.style_queue.bank", "method.patch_queue.bank", "method.key_net.encoder.conv1.weight"} <= set(a)
    assert set(a) == set(b)
    for k, v in a.items():  # network, heads, momentum encoder, queues and their pointers
        torch.testing.assert_close(b[k], v, msg=f"{k} differs after resume")


def test_bad_inputs(potsdam, tmp_path):
    p = call_cli("pretrain", "--data", potsdam, "--out", tmp_path / "x", "--method", "byol", check=False)
    assert p.returncode == 2 and "unknown method 'byol'" in p.stderr and "glcnet" in p.stderr
    p = call_cli("pretrain", "--data", tmp_path, "--out", tmp_path / "y", check=False)
    assert p.returncode == 2 and str(tmp_path) in p.stderr and "Traceback" not in p.stderr
    p = call_cli("pretrain", "--config", "pretrain_cpu", "--data", potsdam, "--out", tmp_path / "z",
                "views.size=100", check=False)
    assert p.returncode == 2 and "views.size" in p.stderr
    p = call_cli("pretrain", "--data", potsdam, "--out", tmp_path / "t", "method.temperature=0", check=False)
    assert p.returncode == 2 and "method.temperature" in p.stderr and "Traceback" not in p.stderr
