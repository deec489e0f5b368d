"""End to end on the real LoveDA samples through the CLI: prepare -> pretrain (2 steps) ->
finetune at 1% (1 epoch, then --resume to 2) -> evaluate on the test scene -> predict a GeoTIFF.

Pretrain and finetune run the CLI in subprocesses; prepare/evaluate/predict call the same
entry point (``glcnet.cli.main``) in-process to save interpreter start-ups."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from PIL import Image

from glcnet.cli import main as cli_main

pytestmark = pytest.mark.slow
SMALL = ["model.aspp_channels=64", "trainer.num_workers=0", "trainer.progress=false"]
FT = ["--config", "finetune_cpu", "--fraction", "0.01", "eval.window=256", "eval.stride=256", *SMALL]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, shared_data):
    from conftest import run_cli

    root = tmp_path_factory.mktemp("e2e")
    prep, pre, ft = root / "prep", root / "pre", root / "ft"
    assert cli_main(["prepare", "loveda", "--src", str(shared_data / "loveda"), "--out", str(prep),
                     "--tile-size", "128", "--split-ratios", "0.34,0.33,0.33"]) == 0
    run_cli("pretrain", "--config", "pretrain_cpu", "--data", prep, "--out", pre, "trainer.max_steps=2",
            "trainer.batch_size=4", "views.size=64", "method.patch_size=16", *SMALL)
    first = run_cli("finetune", "--data", prep, "--init", pre, "--out", ft, *FT, "optim.epochs=1")
    resumed = run_cli("finetune", "--data", prep, "--init", pre, "--out", ft, *FT, "optim.epochs=2", "--resume")
    return {"root": root, "prep": prep, "pre": pre, "ft": ft,
            "log": first.stdout + first.stderr + resumed.stdout + resumed.stderr}


def test_finetune_outputs_and_model_selection(pipeline):
    ft = pipeline["ft"]
    init = json.loads((ft / "init.json").read_text())
    assert init["method"] == "glcnet" and init["part"] == "encoder+aspp" and init["unexpected"] == []
    assert init["loaded"] > 100 and any(k.startswith("head.") for k in init["missing"])
    assert "loaded" in pipeline["log"] and "0 unexpected" in pipeline["log"]
    records = [json.loads(line) for line in (ft / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_miou" in r]
    assert [int(r["epoch"]) for r in val] == [0, 1]  # resumed: epoch 0 not trained twice
    assert sum("train_loss_epoch" in r for r in records) == 2
    best = torch.load(ft / "model.pt", weights_only=True)
    last = torch.load(ft / "model_last.pt", weights_only=True)
    scores = [r["val_miou"] for r in val]
    assert best["selected_on"] == "val_miou" and best["best_score"] == pytest.approx(max(scores))
    assert best["epoch"] == int(np.argmax(scores)) and last["epoch"] == 1
    assert best["kind"] == "segmentation" and best["in_channels"] == 3 and len(best["classes"]) == 7
    # without --resume an existing run is not overwritten
    code = cli_main(["finetune", "--data", str(pipeline["prep"]), "--out", str(ft), *FT])
    assert code == 2


def test_evaluate_on_test_scenes(pipeline, capsys):
    out = pipeline["root"] / "eval"
    assert cli_main(["evaluate", "--ckpt", str(pipeline["ft"] / "model.pt"), "--split", "test", "--out", str(out),
                     "--window", "256", "--stride", "256"]) == 0
    printed = capsys.readouterr()
    assert "test: OA" in printed.out and f"report: {out / 'report.html'}" in printed.out
    assert "evaluate test: 1 scene, 16 windows, Kappa " in printed.err  # 1024 px scene, window = stride = 256
    m = json.loads((out / "metrics.json").read_text())
    splits = json.loads((pipeline["prep"] / "splits.json").read_text())["scenes"]
    assert list(m["scenes"]) == splits["test"] and not set(m["scenes"]) & set(splits["val"])
    mask = np.load(pipeline["prep"] / "masks" / f"{splits['test'][0]}.npy")
    assert m["pixels"] == int((mask != 255).sum()) == int(np.sum(m["confusion"]))
    assert 0 <= m["oa"] <= 1 and set(m["per_class"]) == set(json.loads((pipeline["prep"] / "dataset.json").read_text())["classes"])
    scene = splits["test"][0]
    assert sorted(f.name for f in out.iterdir()) == sorted([".glcnet.json", "metrics.json", "metrics.md", "confusion.png",
                                                            f"{scene}.png", "pred", "report.html"])
    assert "| OA | Kappa | mIoU | mean F1 |" in (out / "metrics.md").read_text()
    assert Image.open(out / f"{scene}.png").size[0] > 3 * 1000  # image | truth | prediction, titles, legend
    # pred/SCENE.png: the class map, palette = class colours, pixel = class index
    with Image.open(out / "pred" / f"{scene}.png") as im:
        assert im.mode == "P" and im.size == mask.shape[::-1]
        classes = np.asarray(im)
        colors = json.loads((pipeline["prep"] / "dataset.json").read_text())["colors"]
        assert im.getpalette()[:3 * len(colors)] == [v for c in colors for v in c]
    assert classes.max() < len(colors) and 0 < m["oa"] == pytest.approx(
        float(((classes == mask) & (mask != 255)).sum() / (mask != 255).sum()))


def test_evaluation_page_in_a_browser(pipeline, chromium):
    from browser import check_page, render

    out = pipeline["root"] / "eval_page"
    assert cli_main(["evaluate", "--ckpt", str(pipeline["ft"] / "model.pt"), "--out", str(out),
                     "--window", "256", "--stride", "256"]) == 0
    text = (out / "report.html").read_text()
    assert "Per class" in text and "agriculture" in text and "ignore / no label" in text
    found = render(out / "report.html", pipeline["root"] / "eval_page.png", chromium)
    check_page(found, min_images=4)  # confusion matrix + image, truth, prediction of the test scene


def test_export_real_runs_load_in_smp(pipeline, tmp_path):
    """The pretraining and the fine-tuning runs of this pipeline, exported through the CLI."""
    import segmentation_models_pytorch as smp

    from glcnet.finetune.weights import load_model

    for run, fmt, part in ((pipeline["pre"], "smp", "all"), (pipeline["ft"], "smp", None), (pipeline["pre"], "timm", None)):
        out = tmp_path / f"{run.name}_{fmt}.pt"
        assert cli_main(["export", str(run), "--format", fmt, "--out", str(out)] + (["--part", part] if part else [])) == 0
        meta = json.loads(out.with_suffix(".json").read_text())
        assert meta["bands"] == ["R", "G", "B"] and meta["method"] == "glcnet"
        assert meta["kind"] == ("segmentation" if run == pipeline["ft"] else "pretrained")
    model = smp.DeepLabV3Plus(**meta_of(tmp_path / "ft_smp.json")["smp"])
    model.load_state_dict(torch.load(tmp_path / "ft_smp.pt", weights_only=True), strict=True)
    ours, _ = load_model(pipeline["ft"] / "model.pt")
    x = torch.rand(1, 3, 128, 128)
    meta = meta_of(tmp_path / "ft_smp.json")
    norm = (x - torch.tensor(meta["mean"]).view(1, -1, 1, 1)) / torch.tensor(meta["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(norm), ours.predict_logits(x), rtol=1e-4, atol=1e-4)


def meta_of(path):
    return json.loads(path.read_text())


def test_predict_georeferenced_geotiff(pipeline, shared_data):
    rgb = np.asarray(Image.open(shared_data / "loveda" / "img_dir" / "2.png").convert("RGB"))[:300, :260]
    transform = Affine(0.3, 0, 300000.0, 0, -0.3, 3500000.0)
    src = pipeline["root"] / "scene.tif"
    with rasterio.open(src, "w", driver="GTiff", height=300, width=260, count=3, dtype="uint8",
                       crs="EPSG:32650", transform=transform) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    out = pipeline["root"] / "pred"
    assert cli_main(["predict", "--ckpt", str(pipeline["ft"] / "model.pt"), str(src), "--out", str(out),
                     "--window", "128", "--stride", "64", "--no-progress"]) == 0
    with rasterio.open(out / "scene_pred.tif") as d:
        assert d.crs.to_epsg() == 32650 and d.transform == transform and d.shape == (300, 260)
        assert d.read(1).max() < 7
    assert (out / "scene_pred.png").is_file()


def test_evaluate_isprs_convention(pipeline, tmp_path):
    """Eval masks (boundaries and one 'clutter' class -> 255) give a second, separately pooled result."""
    import shutil

    from glcnet.finetune import evaluate

    prep = shutil.copytree(pipeline["prep"], tmp_path / "prep")
    meta = json.loads((prep / "dataset.json").read_text())
    test = next(s for s in meta["scenes"] if s["split"] == "test")
    mask = np.load(prep / "masks" / f"{test['name']}.npy")
    eroded = mask.copy()
    eroded[:, ::7] = 255  # stand-in for eroded boundaries
    eroded[eroded == 6] = 255  # class 6 plays clutter
    (prep / "eval_masks").mkdir()
    np.save(prep / "eval_masks" / f"{test['name']}.npy", eroded)
    test["has_eval_mask"] = True
    (prep / "dataset.json").write_text(json.dumps(meta))
    from glcnet.config import EvalConfig

    m = evaluate.run(pipeline["ft"] / "model.pt", prep, "test", EvalConfig(window=256, stride=256), out=None)
    i = m["isprs"]
    assert m["pixels"] == int((mask != 255).sum()) and i["pixels"] == int((eroded != 255).sum())
    assert "agriculture" in i["excluded_from_means"] and i["per_class"]["agriculture"]["support"] == 0
    kept = [c["iou"] for name, c in i["per_class"].items() if name not in i["excluded_from_means"]]
    assert i["miou"] == pytest.approx(np.nanmean(kept))


def test_class_weights_formula():
    from glcnet.finetune.train import class_weights

    assert class_weights("none", [1, 2]) is None
    # N = 40, K = 3: w_c = N / (K n_c); absent class -> 0
    assert class_weights("inverse", [10, 30, 0]).tolist() == pytest.approx([40 / 30, 40 / 90, 0.0])
    assert class_weights("sqrt-inverse", [10, 30, 0]).tolist() == pytest.approx([(40 / 30) ** 0.5, (40 / 90) ** 0.5, 0.0])


def test_finetune_configs_load():
    from glcnet.config import FinetuneConfig, load_config

    assert load_config(FinetuneConfig, "finetune_cpu").model.encoder == "resnet18"
    paper = load_config(FinetuneConfig, "finetune_paper")
    assert (paper.model.encoder, paper.optim.lr, paper.optim.gamma, paper.optim.epochs) == ("resnet50", 1e-4, 0.98, 150)
    assert (paper.trainer.batch_size, paper.crop, paper.load, paper.eval.stride) == (16, 256, "encoder+aspp", 128)


def test_frozen_parts_stay_exactly_as_loaded(pipeline):
    """--freeze encoder+aspp: no gradient and frozen batch-norm statistics, recomputed first on the same
    tiles for every init (bn_tiles; 0: as loaded); the decoder still trains."""
    from conftest import run_cli
    from glcnet.config import ModelConfig
    from glcnet.data.prepared import PreparedDataset, sample_tiles
    from glcnet.models import build_model
    from glcnet.models.batchnorm import chunks, recalibrate

    out, kept = pipeline["root"] / "frozen", pipeline["root"] / "frozen_kept"
    for folder, extra in ((out, []), (kept, ["bn_tiles=0"])):
        run_cli("finetune", "--data", pipeline["prep"], "--init", pipeline["pre"], "--out", folder, *FT,
                "optim.epochs=1", "--freeze", "encoder+aspp", *extra)
    pre = torch.load(pipeline["pre"] / "pretrained.pt", weights_only=True)["state_dict"]
    got = torch.load(out / "model_last.pt", weights_only=True)["state_dict"]
    frozen = [k for k in pre if k.startswith(("encoder.", "decoder.aspp."))]
    stats = [k for k in frozen if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(frozen) > 100 and len(stats) > 20
    assert all(torch.equal(pre[k], got[k]) for k in frozen if k not in stats)  # weights as loaded
    # statistics: those of the loaded network recomputed on the sample, then frozen through training
    ds = PreparedDataset(pipeline["prep"])
    net = build_model(ModelConfig(aspp_channels=64, atrous_rates=(2, 4, 6)), ds.in_channels, ds.num_classes)
    net.load_state_dict({k: v for k, v in pre.items()}, strict=False)
    recalibrate(net, chunks(sample_tiles(ds, ("train", "unlabeled"), 256), 8))
    want = net.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in stats if "num_batches" not in k)
    assert not all(torch.equal(pre[k], got[k]) for k in stats)
    as_loaded = torch.load(kept / "model_last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(pre[k], as_loaded[k]) for k in frozen)
    trained = [k for k in pre if k.startswith("decoder.block") and pre[k].is_floating_point()]
    assert trained and not all(torch.equal(pre[k], got[k]) for k in trained)
    bad = cli_main(["finetune", "--data", str(pipeline["prep"]), "--out", str(out / "x"), *FT, "freeze=all"])
    assert bad == 2
    bad = cli_main(["finetune", "--data", str(pipeline["prep"]), "--out", str(out / "x"), *FT, "loaded_lr_mult=0"])
    assert bad == 2 and not (out / "x").exists()


def test_loaded_parts_learn_at_their_own_rate():
    """loaded_lr_mult: the loaded parts form an Adam group at mult x lr, the rest at lr; the schedule scales both;
    frozen parameters are in no group."""
    from glcnet.config import EvalConfig, ModelConfig, OptimConfig
    from glcnet.finetune.task import SegmentationTask
    from glcnet.models import build_model
    from glcnet.models.deeplab import PARTS

    net = build_model(ModelConfig(encoder="resnet18", aspp_channels=32), 3, num_classes=2)
    optim = OptimConfig(lr=1e-3, epochs=4, schedule="exp", gamma=0.5)
    task = SegmentationTask(net, optim, EvalConfig(), slow=PARTS["encoder+aspp"], slow_mult=0.1)
    conf = task.configure_optimizers()
    fast, slow = conf["optimizer"].param_groups
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[id(p)].startswith(("encoder.", "decoder.aspp.")) for p in slow["params"]} == {True}
    assert {names[id(p)].startswith(("encoder.", "decoder.aspp.")) for p in fast["params"]} == {False}
    assert len(fast["params"]) + len(slow["params"]) == len(names)
    assert (fast["lr"], slow["lr"]) == pytest.approx((1e-3, 1e-4))
    conf["optimizer"].step()  # no gradients: changes nothing, keeps torch's step order
    conf["lr_scheduler"]["scheduler"].step()
    assert (fast["lr"], slow["lr"]) == pytest.approx((5e-4, 5e-5))
    # a frozen encoder is in no group; one rate (mult 1) keeps the single group of earlier versions
    frozen = SegmentationTask(net, optim, EvalConfig(), frozen=PARTS["encoder"], slow=PARTS["encoder+aspp"],
                              slow_mult=0.1).configure_optimizers()["optimizer"].param_groups
    assert all(not names[id(p)].startswith("encoder.") for g in frozen for p in g["params"])
    assert len(frozen[1]["params"]) == sum(n.startswith("decoder.aspp.") for n in names.values())
    for p in net.parameters():
        p.requires_grad_(True)
    one = SegmentationTask(net, optim, EvalConfig(), slow=PARTS["encoder+aspp"]).configure_optimizers()
    assert len(one["optimizer"].param_groups) == 1
