"""``glcnet export``: the exported files load with smp, timm and torchgeo's own APIs and compute what ours does."""

from __future__ import annotations

import json

import pytest
import torch

from glcnet.cli import main as cli_main
from glcnet.config import ModelConfig, to_dict
from glcnet.errors import GlcnetError
from glcnet.finetune.weights import model_checkpoint
from glcnet.models import build_model
from glcnet.models.export import export, timm_name
from glcnet.utils.atomic import torch_save

CFG = ModelConfig(encoder="resnet18", aspp_channels=32)
MEAN, STD = [0.4, 0.5, 0.3, 0.6], [0.2, 0.1, 0.15, 0.25]
VALUE_RANGE = [[0.0, 255.0], [0.0, 255.0], [0.0, 255.0], [10.0, 4000.0]]


def _randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights *and* batch-norm statistics, so that equal outputs mean equal tensors everywhere."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if v.is_floating_point() and k not in ("mean", "std"):
                v.copy_(torch.rand(v.shape, generator=g) * 0.2 + (0.9 if "running_var" in k else -0.1))
    return net.eval()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A pretraining run folder (pretrained.pt, no head) and a fine-tuning run folder (model.pt)."""
    root = tmp_path_factory.mktemp("export")
    pre_net = _randomise(build_model(CFG, 4, mean=MEAN, std=STD), 1)
    (root / "pre").mkdir()
    torch_save({"kind": "pretrained", "method": "glcnet", "model": to_dict(CFG), "in_channels": 4,
                "bands": ["R", "G", "B", "NIR"], "mean": MEAN, "std": STD, "value_range": VALUE_RANGE,
                "epochs": 3, "step": 30, "state_dict": pre_net.state_dict()}, root / "pre" / "pretrained.pt")
    ft_net = _randomise(build_model(CFG, 4, num_classes=3, mean=MEAN, std=STD), 2)
    (root / "ft").mkdir()
    torch_save(model_checkpoint(ft_net, CFG, bands=["R", "G", "B", "NIR"], value_range=VALUE_RANGE,
                                classes=["a", "b", "c"], colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]],
                                ignore_index=255, method="glcnet", fraction=0.01, init="x"), root / "ft" / "model.pt")
    return {"root": root, "pre": root / "pre", "ft": root / "ft", "pre_net": pre_net, "ft_net": ft_net}


def _normalised(x: torch.Tensor, meta: dict) -> torch.Tensor:
    """The JSON's preprocessing from scaled [0, 1] input on: (x - mean) / std per band."""
    return (x - torch.tensor(meta["mean"]).view(1, -1, 1, 1)) / torch.tensor(meta["std"]).view(1, -1, 1, 1)


def test_smp_fine_tuned_model_loads_strictly_and_predicts_the_same(runs, tmp_path):
    import segmentation_models_pytorch as smp

    out, meta_path = export(runs["ft"], "smp", tmp_path / "ft_smp.pt")
    meta = json.loads(meta_path.read_text())
    model = smp.DeepLabV3Plus(**meta["smp"])
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.rand(2, 4, 64, 64)
    with torch.no_grad():
        ours = runs["ft_net"].predict_logits(x)
        theirs = model.eval()(_normalised(x, meta))
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert meta["part"] == "model" and meta["missing_keys"] == [] and meta["classes"] == ["a", "b", "c"]
    assert meta["bands"] == ["R", "G", "B", "NIR"] and meta["value_range"] == VALUE_RANGE
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD) and meta["method"] == "glcnet"


@pytest.mark.parametrize("part,missing_prefixes", [
    (None, ("decoder.block1.", "decoder.block2.", "segmentation_head.")),  # default encoder+aspp
    ("all", ("segmentation_head.",)),
    ("encoder", ("decoder.", "segmentation_head.")),
])
def test_smp_pretrained_parts(runs, tmp_path, part, missing_prefixes):
    import segmentation_models_pytorch as smp

    out, meta_path = export(runs["pre"], "smp", tmp_path / "pre_smp.pt", part=part)
    meta = json.loads(meta_path.read_text())
    model = smp.DeepLabV3Plus(**meta["smp"], classes=5)
    result = model.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(k.startswith(missing_prefixes) for k in result.missing_keys)
    assert sorted(result.missing_keys) == sorted(meta["missing_keys"])
    src = runs["pre_net"].state_dict()
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], src[k]) for k in torch.load(out, weights_only=True))
    assert meta["kind"] == "pretrained" and "classes" not in meta["smp"] and meta["epochs"] == 3


def test_timm_resnet_encoder(runs, tmp_path):
    import timm

    out, meta_path = export(runs["pre"], "timm", tmp_path / "enc_timm.pt")
    meta = json.loads(meta_path.read_text())
    assert meta["timm"] == {"model_name": "resnet18", "pretrained": False, "in_chans": 4, "num_classes": 0}
    model = timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=0)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    # the same network up to stride 16 (our last stage is dilated, smp style, for output stride 16)
    x = _normalised(torch.rand(2, 4, 64, 64), meta)
    with torch.no_grad():
        ours = runs["pre_net"].encoder(x)[-2]  # [B, 256, 4, 4]: layer3
        m = model.eval()
        theirs = m.layer3(m.layer2(m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(x)))))))
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert meta["output_stride"] == 16


def test_torchgeo_task_takes_the_encoder(runs, tmp_path):
    from torchgeo.trainers import SemanticSegmentationTask

    out, meta_path = export(runs["ft"] / "model.pt", "torchgeo", tmp_path / "enc_torchgeo.ckpt")
    meta = json.loads(meta_path.read_text())
    task = SemanticSegmentationTask(**meta["torchgeo"], num_classes=7, weights=str(out))
    src = runs["ft_net"].state_dict()
    enc = task.model.encoder.state_dict()
    assert enc and all(torch.equal(v, src["encoder." + k]) for k, v in enc.items())


def test_cli_export_and_errors(runs, tmp_path, capsys):
    out = tmp_path / "w" / "glcnet_smp.pt"
    assert cli_main(["export", str(runs["pre"]), "--format", "smp", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "smp.DeepLabV3Plus" in printed and out.with_suffix(".json").is_file()
    before = out.read_bytes()
    # never overwrites without --overwrite; one line naming the file
    assert cli_main(["export", str(runs["pre"]), "--format", "smp", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out}: already exists") and len(err.splitlines()) == 1
    assert out.read_bytes() == before
    assert cli_main(["export", str(runs["pre"]), "--format", "smp", "--part", "model", "--out",
                     str(tmp_path / "m.pt")]) == 2
    assert "needs a fine-tuned model.pt" in capsys.readouterr().err
    assert cli_main(["export", str(tmp_path / "nothing"), "--format", "timm", "--out", str(tmp_path / "t.pt")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert cli_main(["export", str(runs["pre"]), "--format", "timm", "--part", "all", "--out",
                     str(tmp_path / "t.pt")]) == 2
    assert not (tmp_path / "t.pt").exists() and not (tmp_path / "m.pt").exists()
    with pytest.raises(GlcnetError, match="no timm counterpart"):
        timm_name("efficientnet-b0")
    assert timm_name("tu-convnext_tiny") == ("convnext_tiny", "encoder.model.")
