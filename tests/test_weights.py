"""Loading pretrained parts (report + failures) and the model.pt round trip."""

from __future__ import annotations

import pytest
import torch

from glcnet.config import ModelConfig, to_dict
from glcnet.errors import GlcnetError
from glcnet.finetune.weights import load_model, load_pretrained, model_checkpoint, summary
from glcnet.models import build_model
from glcnet.utils.atomic import torch_save

CFG = ModelConfig(encoder="resnet18", aspp_channels=32)


def pretrained_file(tmp_path, cfg=CFG, in_channels=4, seed=1, **changes):
    torch.manual_seed(seed)
    net = build_model(cfg, in_channels)  # no head, as written by glcnet pretrain
    ckpt = {"kind": "pretrained", "method": "glcnet", "model": to_dict(cfg), "in_channels": in_channels,
            "bands": ["R", "G", "B", "NIR"][:in_channels], "mean": [0.5] * in_channels, "std": [0.2] * in_channels,
            "value_range": [[0, 255]] * in_channels, "state_dict": net.state_dict(), **changes}
    path = tmp_path / f"pretrained_{seed}.pt"
    torch_save(ckpt, path)
    return path, net.state_dict()


def fresh(seed=2):
    torch.manual_seed(seed)
    return build_model(CFG, 4, num_classes=3)


@pytest.mark.parametrize("part,loaded_prefixes", [
    ("encoder", ("encoder.",)),
    ("encoder+aspp", ("encoder.", "decoder.aspp.")),
    ("all", ("encoder.", "decoder.")),
])
def test_load_by_part(tmp_path, part, loaded_prefixes):
    path, src = pretrained_file(tmp_path)
    model = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, str(path), part, CFG)
    after = model.state_dict()
    for k, v in after.items():
        if k.startswith(loaded_prefixes):
            assert torch.equal(v, src[k]), k
        elif v.is_floating_point() and v.numel() > 1 and not k.startswith(("mean", "std")):
            assert torch.equal(v, before[k]), k  # untouched
    assert report["loaded"] == sum(k.startswith(loaded_prefixes) for k in after)
    assert report["unexpected"] == []
    assert all(k.startswith("head.") or k in ("mean", "std") or not k.startswith(loaded_prefixes)
               for k in report["missing"])
    assert any(k.startswith("head.") for k in report["missing"])
    assert f"part {part!r}" in summary(report)


def test_init_none_and_run_folder(tmp_path):
    report = load_pretrained(fresh(), "none", "encoder+aspp", CFG)
    assert report["loaded"] == 0 and report["unexpected"] == []
    path, _ = pretrained_file(tmp_path)
    path.rename(tmp_path / "pretrained.pt")
    assert load_pretrained(fresh(), str(tmp_path), "encoder", CFG)["loaded"] > 0


def test_unexpected_keys_fail(tmp_path):
    path, state = pretrained_file(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["projector.0.weight"] = torch.zeros(2, 2)
    torch_save(ckpt, path)
    with pytest.raises(GlcnetError, match="unexpected keys"):
        load_pretrained(fresh(), str(path), "encoder+aspp", CFG)


def test_other_architecture_or_bands_fail(tmp_path):
    path34, _ = pretrained_file(tmp_path, cfg=ModelConfig(encoder="resnet34", aspp_channels=32))
    with pytest.raises(GlcnetError, match="model.encoder='resnet34'"):
        load_pretrained(fresh(), str(path34), "encoder", CFG)
    path3, _ = pretrained_file(tmp_path, in_channels=3, seed=3)
    with pytest.raises(GlcnetError, match="3 bands but the data has 4"):
        load_pretrained(fresh(), str(path3), "encoder", CFG)
    # same declared config but weights of another shape (hand-edited): shape error
    path, _ = pretrained_file(tmp_path, seed=4)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["encoder.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    torch_save(ckpt, path)
    with pytest.raises(GlcnetError, match="encoder.conv1.weight has shape"):
        load_pretrained(fresh(), str(path), "encoder", CFG)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(GlcnetError, match="not found"):
        load_pretrained(fresh(), str(tmp_path / "nope.pt"), "encoder", CFG)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(GlcnetError, match="not a readable"):
        load_pretrained(fresh(), str(bad), "encoder", CFG)
    with pytest.raises(GlcnetError, match="unknown part"):
        load_pretrained(fresh(), "none", "head", CFG)


def test_model_pt_round_trip_and_refusals(tmp_path):
    model = fresh().eval()
    meta = dict(bands=["R", "G", "B", "NIR"], value_range=[[0, 255]] * 4, classes=["a", "b", "c"],
                colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]], ignore_index=255)
    torch_save(model_checkpoint(model, CFG, **meta), tmp_path / "model.pt")
    loaded, ckpt = load_model(tmp_path / "model.pt")
    x = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.predict_logits(x), model.predict_logits(x))
    assert ckpt["classes"] == ["a", "b", "c"]
    pre, _ = pretrained_file(tmp_path)
    with pytest.raises(GlcnetError, match="no classification head"):
        load_model(pre)
    other = build_model(ModelConfig(encoder="resnet34", aspp_channels=32), 4, num_classes=3)
    torch_save(model_checkpoint(other, CFG, **meta), tmp_path / "liar.pt")  # says resnet18, holds resnet34
    with pytest.raises(GlcnetError, match="weights do not fit DeepLabv3\\+ resnet18"):
        load_model(tmp_path / "liar.pt")


def test_checkpoints_of_every_pretraining_method_load(tmp_path):
    """What each method exports (``pretrained_state_dict``) loads by every part, no unexpected keys."""
    from glcnet.config import MethodConfig, PretrainConfig
    from glcnet.ssl import METHODS, build_method

    for name in METHODS:
        cfg = PretrainConfig(model=CFG, method=MethodConfig(name=name, queue_size=64))
        method = build_method(cfg, 4)
        path = tmp_path / f"{name}.pt"
        torch_save({"kind": "pretrained", "method": name, "model": to_dict(CFG), "in_channels": 4,
                    "state_dict": method.pretrained_state_dict()}, path)
        state = method.pretrained_state_dict()
        for part, prefixes in (("encoder", ("encoder.",)), ("encoder+aspp", ("encoder.", "decoder.aspp.")),
                               ("all", ("encoder.", "decoder."))):
            model = fresh()
            report = load_pretrained(model, str(path), part, CFG)
            want = {k for k in model.state_dict() if k.startswith(prefixes)}
            assert report["loaded"] == len(want) and report["unexpected"] == [], (name, part)
            assert set(report["missing"]) == set(model.state_dict()) - want, (name, part)
            got = model.state_dict()
            assert all(torch.equal(got[k], state[k]) for k in want), (name, part)  # the method's tensors
