"""``glcnet predict``: georeferenced outputs, streamed == in-memory, large rasters, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from torch import nn

from glcnet.cli import main as cli_main
from glcnet.config import EvalConfig, ModelConfig
from glcnet.data.raster import scale
from glcnet.finetune.predict import inference_fn, predict_raster
from glcnet.finetune.sliding import sliding_probs
from glcnet.finetune.weights import load_model, model_checkpoint
from glcnet.models import build_model
from glcnet.utils.atomic import torch_save

CFG = ModelConfig(encoder="resnet18", aspp_channels=32)
META = dict(bands=["R", "G", "B", "NIR"], value_range=[[0, 255]] * 4, classes=["a", "b", "c"],
            colors=[[255, 255, 255], [0, 0, 255], [0, 255, 0]], ignore_index=255)
CRS = "EPSG:32633"
TRANSFORM = Affine(0.05, 0, 500000.0, 0, -0.05, 5800000.0)


def write_tif(path, data, crs=CRS, transform=TRANSFORM):
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(CFG, 4, num_classes=3, mean=[0.4] * 4, std=[0.2] * 4).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch_save(model_checkpoint(model, CFG, **META), path)
    return path


def test_predict_geotiff_matches_in_memory_sliding(tmp_path, model_pt):
    raw = np.random.default_rng(0).integers(0, 256, (4, 150, 200), dtype=np.uint8)
    src = write_tif(tmp_path / "scene.tif", raw)
    model, ckpt = load_model(model_pt)
    cfg = EvalConfig(window=64, stride=32, batch_size=4)
    out = predict_raster(model, ckpt, src, tmp_path / "out", cfg=cfg, probs=True, progress=False)
    with rasterio.open(out["pred"]) as d, rasterio.open(src) as s:
        assert d.crs == s.crs and d.transform == s.transform and (d.height, d.width) == (150, 200)
        assert d.dtypes[0] == "uint8" and d.profile["compress"] == "lzw" and d.profile["tiled"]
        pred = d.read(1)
    probs = sliding_probs(inference_fn(model, "cpu"), torch.from_numpy(scale(raw, META["value_range"])),
                          window=64, stride=32, batch_size=4)
    assert np.array_equal(pred, probs.argmax(0).numpy())
    with rasterio.open(out["probs"]) as d:
        p = d.read()  # [K, H, W] uint8, 255 * p
        assert p.shape == (3, 150, 200) and d.crs == CRS
    assert np.abs(p.astype(int).sum(0) - 255).max() <= 2  # rounding of K values
    assert np.abs(p / 255.0 - probs.numpy()).max() <= 0.5 / 255 + 1e-6
    from PIL import Image

    assert Image.open(out["png"]).size == (200, 150)
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["scene_pred.png", "scene_pred.tif", "scene_probs.tif"]


class ScaleModel(nn.Module):
    """Pointwise stand-in network (fast): 3 class scores from the bands."""

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0], x[:, 1], x[:, 2] + x[:, 3] - 0.5], 1)  # [B, 3, h, w]


def test_predict_6000_square_raster(tmp_path):
    """An ISPRS-sized 6000x6000 scene streamed through (pointwise model to keep it quick)."""
    raw = np.zeros((4, 6000, 6000), np.uint8)
    raw[0, :3000] = 255  # top half: class 0 wins
    raw[1, 3000:] = 255  # bottom half: class 1
    raw[2:, :, 5000:] = 255  # right strip: class 2
    src = write_tif(tmp_path / "big.tif", raw)
    del raw
    ckpt = {"classes": META["classes"], "colors": META["colors"], "value_range": META["value_range"]}
    out = predict_raster(ScaleModel(), ckpt, src, tmp_path, cfg=EvalConfig(window=512, stride=512, batch_size=8),
                         progress=False)
    with rasterio.open(out["pred"]) as d:
        assert d.transform == TRANSFORM and d.crs == CRS
        pred = d.read(1)
    assert (pred[:3000, :5000] == 0).all() and (pred[3000:, :5000] == 1).all() and (pred[:, 5000:] == 2).all()
    from PIL import Image

    assert Image.open(out["png"]).size == (1000, 1000)  # downsampled preview


def test_progress_bar_on_a_terminal_only(tmp_path, model_pt, cli):
    from conftest import run_cli_tty

    raw = np.random.default_rng(2).integers(0, 256, (4, 96, 160), dtype=np.uint8)
    tif = write_tif(tmp_path / "scene.tif", raw)
    args = ["predict", "--ckpt", model_pt, tif, "--window", "64", "--stride", "32"]
    code, text = run_cli_tty(*args, "--out", tmp_path / "tty")
    assert code == 0, text
    assert "scene.tif:" in text and "/8 " in text and "window/s" in text and "\r" in text  # a bar: 2 x 4 windows
    p = cli(*args, "--out", tmp_path / "pipe")  # not a terminal: no bar, one line for the finished stage
    assert "\r" not in p.stderr and "window/s" not in p.stderr
    assert "predict scene.tif: 160x96 px, 8 windows in " in p.stderr
    assert str(tmp_path / "pipe" / "scene_pred.tif") in p.stdout


def test_cli_predict_and_bad_inputs(tmp_path, model_pt, cli, capsys):
    raw = np.random.default_rng(1).integers(0, 256, (4, 70, 90), dtype=np.uint8)
    good = write_tif(tmp_path / "good.tif", raw)
    out = tmp_path / "out"
    cli("predict", "--ckpt", model_pt, good, "--out", out, "--window", "64", "--stride", "32", "--no-progress")
    with rasterio.open(out / "good_pred.tif") as d:
        assert d.crs == CRS and d.transform == TRANSFORM and d.shape == (70, 90)

    three = write_tif(tmp_path / "three.tif", raw[:3])
    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(good.read_bytes()[: 4000])  # header intact, pixel data cut off
    pre = tmp_path / "pretrained.pt"
    ckpt = torch.load(model_pt, weights_only=True)
    torch_save({**ckpt, "kind": "pretrained"}, pre)
    cases = [
        ((model_pt, three), "three.tif: has 3 bands but the model expects 4"),
        ((model_pt, text), "notes.tif: cannot read raster"),
        ((model_pt, corrupt), "corrupt.tif: cannot read raster data"),  # found by the checks, before any output
        ((tmp_path / "missing.pt", good), "missing.pt: model checkpoint not found"),
        ((pre, good), "no classification head"),
        ((model_pt, good, three), "three.tif: has 3 bands"),  # checked before the good one is written
    ]
    for (ck, *ins), message in cases:
        bad_out = tmp_path / "bad_out"
        code = cli_main(["predict", "--ckpt", str(ck), *map(str, ins), "--out", str(bad_out), "--no-progress",
                         "--window", "64", "--stride", "32"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err, (message, err)
        assert not bad_out.exists() or list(bad_out.iterdir()) == []  # no partial output, no temp files
