"""Dense linear probe: known-answer cases, the CLI, the online probe of pretraining, paired statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import call_cli
from glcnet.config import ModelConfig
from glcnet.data.prepare import prepare
from glcnet.data.prepared import PreparedDataset
from glcnet.data.synthetic import BANDS, CLASSES, generate_scenes
from glcnet.experiment.stats import paired_difference
from glcnet.finetune.probe import DenseProbe, ProbeCallback, ProbeStopped, fit_linear_probe, sample_features
from glcnet.models import build_model


def test_fit_separates_linearly_separable_features():
    """Three classes separated by hyperplanes with a margin: the fitted probe is exact on fresh samples."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])

    def sample(n):
        y = torch.randint(0, 3, (n,), generator=g)
        x = centres[y] + 0.5 * torch.rand(n, 4, generator=g)  # the nearest centre is always the class
        return x * torch.tensor([1.0, 10.0, 0.1, 3.0]), y  # unequal scales: the standardisation must cope

    x, y = sample(3000)
    probe = fit_linear_probe(x, y, 3)
    xt, yt = sample(3000)
    pred = ((xt - probe.mean) / probe.std @ probe.weight.T + probe.bias).argmax(1)
    assert torch.equal(pred, yt)


def test_fit_is_deterministic_and_rejects_empty_input():
    x, y = torch.randn(500, 8), torch.randint(0, 2, (500,))
    a, b = fit_linear_probe(x, y, 2), fit_linear_probe(x, y, 2)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    with pytest.raises(Exception, match="probe"):
        fit_linear_probe(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), 2)


def test_sample_features_equals_full_upsampling():
    feat = torch.randn(5, 6, 7)
    rows, cols = torch.tensor([0, 3, 27, 11]), torch.tensor([0, 27, 5, 19])
    full = F.interpolate(feat[None], size=(28, 28), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(sample_features(feat, rows, cols, 28, 28), full[:, rows, cols].T, atol=1e-5)


def test_paired_difference_known_values():
    p = paired_difference([0.3, 0.5, 0.7], [0.2, 0.3, 0.4])  # d = 0.1, 0.2, 0.3
    assert p.n == 3 and math.isclose(p.mean, 0.2) and math.isclose(p.sd, 0.1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t_{0.975, 2}
    assert math.isclose(p.low, 0.2 - half, rel_tol=1e-6) and math.isclose(p.high, 0.2 + half, rel_tol=1e-6)
    one = paired_difference([0.5], [0.25])
    assert one.n == 1 and one.mean == 0.25 and math.isnan(one.low)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """Tiny synthetic data set: 5 labelled 128 px scenes (train/val/test) + 1 unlabelled, 64 px tiles."""
    root = tmp_path_factory.mktemp("probe")
    raw = generate_scenes(root / "raw", n_scenes=5, n_unlabeled=1, size=128, seed=0)
    out = root / "prepared"
    prepare("generic", raw, out, tile_size=64, seed=0, unlabeled=raw / "unlabeled", classes=CLASSES, bands=BANDS,
            split_ratios=(0.6, 0.2, 0.2), fractions=[0.5, 1.0])
    return out


class LabelNet(torch.nn.Module):
    """Features that encode the label: one-hot of the band-0 class code, average-pooled like DeepLab's maps."""

    def __init__(self, codes: list[float]):
        super().__init__()
        self.codes = codes
        self.w = torch.nn.Parameter(torch.zeros(1))  # a parameter, so the probe finds a device

    def features(self, x):
        code = x[:, :1]  # [B, 1, H, W]
        onehot = torch.cat([(code - c).abs() < 1e-3 for c in self.codes], 1).float()  # [B, K, H, W]
        return {"decoder": F.avg_pool2d(onehot, 4), "aspp": F.avg_pool2d(onehot, 16)}


def test_probe_of_features_that_encode_the_labels(synthetic, tmp_path):
    """Band 0 replaced by a code of the class: the decoder-layer probe (1/4 resolution) recovers the
    labels except near class borders; the random-init probe of a real network is far worse."""
    ds = PreparedDataset(synthetic)
    codes = [(c + 1) / 16 for c in range(ds.num_classes)]
    for name in ds.scenes():
        mask = ds.mask(name)
        if mask is None:
            continue
        img = torch.from_numpy(ds.image(name))
        lab = torch.from_numpy(mask.astype("int64"))
        img[0] = torch.tensor(codes + [0.0])[torch.where(lab == 255, len(codes), lab)]
        ds._arrays[("images", name)] = img.numpy()  # scaled values, band 0 = class code
    ds.meta["value_range"] = [[0.0, 1.0]] * ds.in_channels  # the arrays above are already scaled
    net = LabelNet(codes)
    probe = DenseProbe(ds, fraction=1.0, window=64)
    result = probe(net)
    assert result["decoder"]["oa"] > 0.9, result
    assert result["decoder"]["miou"] > result["aspp"]["miou"] > 0.2, result
    assert net.training  # mode restored


def test_a_signal_ends_the_probe_not_the_checkpoint(synthetic, monkeypatch):
    """A signal during a probe (seconds of work) makes it give up between batches, so that the
    training step reaches StopOnSignal's checkpoint within the grace period; nothing is logged as a result."""
    from types import SimpleNamespace

    from glcnet.finetune import probe as probe_module
    from glcnet.utils import signals

    ds = PreparedDataset(synthetic)
    probe = DenseProbe(ds, fraction=1.0, window=64)
    net = build_model(ModelConfig(encoder="resnet18", aspp_channels=16), ds.in_channels, num_classes=ds.num_classes)
    with pytest.raises(ProbeStopped):
        probe(net, stop=lambda: True)
    assert net.training  # mode restored
    logged = []
    lines: list[str] = []
    trainer = SimpleNamespace(global_step=0, is_global_zero=True,
                              loggers=[SimpleNamespace(log_metrics=lambda m, step: logged.append(m))])
    callback = ProbeCallback(probe, every=1)
    monkeypatch.setattr(signals, "requested", lambda: 15)  # SIGTERM received, deferred to the step's end
    monkeypatch.setattr(probe_module.log, "info", lines.append)
    callback._run(trainer, SimpleNamespace(method=SimpleNamespace(net=net)))
    assert logged == [] and callback._bar == {} and lines == ["probe step 0: stopped by a signal"]


def test_probe_cli_none_and_a_pretraining_with_the_online_probe(synthetic, tmp_path):
    # random init, written as JSON
    out = tmp_path / "none.json"
    call_cli("probe", "--ckpt", "none", "--data", synthetic, "--fraction", "0.5", "--out", out,
            "probe.layers=[decoder]", "model.aspp_channels=64")
    r = json.loads(out.read_text())
    assert set(r) >= {"decoder", "seconds", "fraction", "init"} and "aspp" not in r
    assert 0 <= r["decoder"]["miou"] <= 1 and r["init"] == "none"

    # pretraining: probe at step 0, every 2 steps and at the end; the probe does not change the weights
    common = ["views.size=48", "model.aspp_channels=64", "optim.epochs=1", "trainer.max_steps=3",
              "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "probe.fraction=0.5"]
    p = call_cli("pretrain", "--data", synthetic, "--method", "simclr", "--out", tmp_path / "with", *common,
                "probe.every=2")
    assert "probe step 0:" in p.stderr and "probe step 2:" in p.stderr and "probe step 3:" in p.stderr  # progress
    rows = [json.loads(x) for x in (tmp_path / "with" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "probe/decoder_miou" in r] == [0, 2, 3]
    call_cli("pretrain", "--data", synthetic, "--method", "simclr", "--out", tmp_path / "without", *common,
            "probe.every=0")
    a = torch.load(tmp_path / "with" / "pretrained.pt")["state_dict"]
    b = torch.load(tmp_path / "without" / "pretrained.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # after the fact, on the run folder: the data set comes from the run's config, same as the last online probe
    p = call_cli("probe", "--ckpt", tmp_path / "with", "--fraction", "0.5", "--out", tmp_path / "after.json")
    after = json.loads((tmp_path / "after.json").read_text())
    last = [r for r in rows if "probe/decoder_miou" in r][-1]
    assert math.isclose(after["decoder"]["miou"], last["probe/decoder_miou"], rel_tol=1e-5)


def test_probe_cli_errors(synthetic, tmp_path):
    p = call_cli("probe", "--ckpt", "none", "--data", synthetic, "--fraction", "0.3", check=False)
    assert p.returncode == 2 and "no labelled subset 0.3" in p.stderr
    p = call_cli("probe", "--ckpt", tmp_path / "missing.pt", "--data", synthetic, check=False)
    assert p.returncode == 2 and "missing.pt" in p.stderr
    p = call_cli("probe", "--ckpt", "none", check=False)
    assert p.returncode == 2 and "--data" in p.stderr


def test_labelled_subsets_per_seed(synthetic):
    """subset_seed draws same-sized nested subsets from prepare's pool; prepare's own seed gives its subset."""
    ds = PreparedDataset(synthetic)
    prepared = ds.labelled_ids(0.5)
    assert ds.labelled_ids(0.5, subset_seed=0) == prepared  # prepare ran with seed 0
    other = ds.labelled_ids(0.5, subset_seed=1)
    assert len(other) == len(prepared) and other != prepared
    assert set(other) <= set(ds.labelled_ids(1.0)) and set(ds.labelled_ids(1.0, subset_seed=1)) == set(ds.labelled_ids(1.0))
    assert [t.tile_id for t in ds.tiles("train", 0.5, subset_seed=1)] == sorted(other)
