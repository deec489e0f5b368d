"""DDP correctness on the CPU (gloo, 2 processes through the real CLI, tiny settings):
per-rank random streams, exact resume of every rank, the val metric over all ranks' pixels,
and the pieces (rank generators, samplers, lr rule, SyncBN switch) on their own."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli
from glcnet.config import ModelConfig, OptimConfig, PretrainConfig, TrainerConfig, ViewConfig
from glcnet.engine import scaled_lr
from glcnet.engine.processes import sync_batchnorm
from glcnet.errors import GlcnetError
from glcnet.finetune.train import EpochShard, RankShard
from glcnet.ssl import build_method
from glcnet.ssl.pretrain import PretrainTask
from glcnet.transforms import ViewGenerator
from glcnet.utils.rng import rank_generator

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # 2 processes on 2 shared cores
SMALL = ["views.size=64", "model.aspp_channels=64", "method.patch_size=16", "trainer.batch_size=4",
         "trainer.num_workers=0", "trainer.progress=false", "trainer.log_every=1"]


# ----------------------------------------------------------------------------- pieces
def test_each_rank_draws_its_own_views_from_the_task_generator():
    x = torch.randint(0, 256, (4, 4, 64, 64), dtype=torch.uint8)
    views = ViewGenerator(ViewConfig(size=32))
    boxes = {}
    for rank in (0, 1):
        task = PretrainTask(torch.nn.Identity(), PretrainConfig(seed=7), {}, Path("."))
        task._trainer = SimpleNamespace(global_rank=rank)  # what Lightning sets on each process
        task.setup("fit")
        boxes[rank] = views(x, task.generator).box2
        assert torch.equal(boxes[rank], views(x, rank_generator(7, rank)).box2)  # seeded by (seed, rank)
    assert not torch.equal(boxes[0], boxes[1])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", ["glcnet", "simclr", "mocov2", "inpainting", "jigsaw"])
def test_every_random_draw_of_a_method_comes_from_its_generator(name):
    cfg = PretrainConfig(model=ModelConfig(aspp_channels=16), views=ViewConfig(size=48))
    cfg.method.name, cfg.method.patch_size, cfg.method.jigsaw_permutations = name, 12, 4
    torch.manual_seed(0)
    method = build_method(cfg, 4).eval()  # eval: batch-norm statistics do not move between the calls
    x = torch.randint(0, 256, (3, 4, 64, 64), dtype=torch.uint8)
    before = torch.get_rng_state()
    with torch.no_grad():
        a = method(x, generator=torch.Generator().manual_seed(1))["loss"]
        b = method(x, generator=torch.Generator().manual_seed(1))["loss"]
        c = method(x, generator=torch.Generator().manual_seed(2))["loss"]
    assert torch.equal(torch.get_rng_state(), before), "the global RNG was used"
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rank_shard_counts_every_scene_once_and_epoch_shard_fills_every_rank():
    for n, w in [(3, 2), (5, 3), (1, 2), (4, 2)]:
        parts = [list(RankShard(n, w, r)) for r in range(w)]
        assert sorted(sum(parts, [])) == list(range(n)) and [len(RankShard(n, w, r)) for r in range(w)] == \
            [len(p) for p in parts]
    for n, w, bs in [(3, 2, 4), (20, 2, 4), (21, 4, 2)]:  # (3, 2, 4): a tiny subset, drawn with replacement
        shards = [EpochShard(n, w, r, bs, seed=0) for r in range(w)]
        for epoch in (0, 1):
            for s in shards:
                s.set_epoch(epoch)
            parts = [list(s) for s in shards]
            assert all(len(p) == len(s) >= bs for p, s in zip(parts, shards))
            assert all(0 <= i < n for p in parts for i in p)
            if n >= w * bs:  # enough tiles: a shuffle, each tile on one rank (wrapped round at most once)
                flat = sum(parts, [])
                assert set(flat) == set(range(n)) and len(flat) - len(set(flat)) < w
        again = EpochShard(n, w, 0, bs, seed=0)
        again.set_epoch(1)
        assert list(again) == parts[0]  # (seed, epoch) fixes every rank's list


def test_lr_rule_and_sync_batchnorm_switch():
    o = OptimConfig(lr=1e-3)
    assert scaled_lr(o, 32, 1)[0] == 1e-3  # one process, reference = its batch: never rescaled
    o.ref_batch = 256
    assert scaled_lr(o, 64, 8)[0] == pytest.approx(1e-3 * 2 ** 0.5)  # default sqrt: sqrt(512 / 256)
    o.scale_lr = "linear"
    lr, msg = scaled_lr(o, 64, 8)
    assert lr == pytest.approx(2e-3) and "512 / 256" in msg and "64 per process x 8 processes" in msg
    o.scale_lr = "none"
    assert scaled_lr(o, 64, 8)[0] == 1e-3
    o.scale_lr = "cubic"
    with pytest.raises(GlcnetError, match="optim.scale_lr"):
        scaled_lr(o, 64, 8)
    cpu2 = TrainerConfig(accelerator="cpu", devices="2")
    assert sync_batchnorm(cpu2) is False  # auto: off on the CPU
    cpu2.sync_batchnorm = True
    with pytest.raises(GlcnetError, match="needs GPUs"):
        sync_batchnorm(cpu2)
    gpu2 = TrainerConfig(accelerator="gpu", devices="2")  # (no GPU needed to decide)
    assert sync_batchnorm(gpu2) is True  # auto: on for DDP over GPUs
    assert sync_batchnorm(TrainerConfig(accelerator="gpu", devices="1")) is False  # one process
    # MoCo's shuffle-BN: per-process batch norm on GPUs as on the CPU; asking for SyncBN is refused
    assert sync_batchnorm(gpu2, "mocov2") is False and sync_batchnorm(gpu2, "glcnet_m") is False
    gpu2.sync_batchnorm = True
    with pytest.raises(GlcnetError, match="mocov2 keeps batch norm per process"):
        sync_batchnorm(gpu2, "mocov2")


# ----------------------------------------------------------------------------- 2 processes, real CLI
@pytest.fixture(scope="module")
def potsdam(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "potsdam"
    run_cli("prepare", "potsdam", "--src", shared_data / "isprs" / "potsdam_rgbir", "--out", out, "--tile-size", "64")
    return out


@pytest.mark.slow
def test_two_process_resume_ends_with_the_weights_of_an_uninterrupted_run(potsdam, tmp_path):
    args = ["pretrain", "--config", "pretrain_cpu", "--data", potsdam, "optim.epochs=2", *SMALL, *DDP]
    ref, run = tmp_path / "ref", tmp_path / "run"
    p = run_cli(*args, "--out", ref, env=ONE_THREAD)
    assert p.stdout.count("pretrained weights:") == 1  # rank 0 only
    assert p.stderr.count("learning rate 0.00141421 = optim.lr 0.001 x sqrt(8 / 4)") == 1  # 2 x 4 per process
    # 16 tiles / (4 x 2 processes) = 2 steps per epoch: stop after epoch 1, then resume to the end
    run_cli(*args, "trainer.max_steps=2", "--out", run, env=ONE_THREAD)
    assert torch.load(run / "pretrained.pt", weights_only=True)["epochs"] == 1
    run_cli(*args, "--out", run, "--resume", env=ONE_THREAD)
    a = torch.load(ref / "pretrained.pt", weights_only=True)
    b = torch.load(run / "pretrained.pt", weights_only=True)
    assert a["epochs"] == b["epochs"] == 2 and a["step"] == b["step"] == 4
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0, msg=f"{k} differs after resume")
    ranks = torch.load(ref / "checkpoints" / "last.ckpt", weights_only=True)["rng"]["ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["generator"], ranks[1]["generator"])
    epoch_loss = [r for r in map(json.loads, (ref / "metrics.jsonl").read_text().splitlines())
                  if "train/loss_epoch" in r]
    assert len(epoch_loss) == 2  # one (rank-averaged) line per epoch


@pytest.fixture(scope="module")
def three_val_scenes(tmp_path_factory) -> Path:
    """Synthetic scenes: 1 train, 3 val (an odd count: a padded split would count one twice)."""
    from glcnet.data.prepare import prepare
    from glcnet.data.synthetic import BANDS, CLASSES, generate_scenes

    root = tmp_path_factory.mktemp("ddpft")
    raw = generate_scenes(root / "raw", n_scenes=5, size=128, seed=3)
    return prepare("generic", raw, root / "prep", tile_size=64, classes=CLASSES, bands=BANDS,
                   split_ratios=(0.2, 0.6, 0.2), fractions=(1.0,))


@pytest.mark.slow
def test_two_process_finetune_selects_on_the_val_metric_of_all_pixels(three_val_scenes, tmp_path):
    from glcnet.config import EvalConfig
    from glcnet.finetune import evaluate

    assert len(json.loads((three_val_scenes / "splits.json").read_text())["scenes"]["val"]) == 3
    out = tmp_path / "ft"
    ev = ["eval.window=64", "eval.stride=64", "eval.blend=mean"]
    p = run_cli("finetune", "--config", "finetune_cpu", "--data", three_val_scenes, "--out", out, "--fraction", "1.0",
                "optim.epochs=2", "crop=64", "trainer.batch_size=2", "model.aspp_channels=16", "trainer.num_workers=0",
                "trainer.progress=false", *ev, *DDP, env=ONE_THREAD)
    assert p.stdout.count("fine-tuned model") == 1 and p.stderr.count("learning rate") == 1  # rank 0 only
    model = torch.load(out / "model.pt", weights_only=True)
    logged = [r["val_miou"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if "val_miou" in r]
    assert len(logged) == 2 and model["best_score"] == pytest.approx(max(logged), abs=1e-6)
    # one process, the selected weights, every val pixel once
    single = evaluate.run(out / "model.pt", three_val_scenes, "val", EvalConfig(window=64, stride=64, blend="mean"),
                          device="cpu", progress=False)
    assert len(single["scenes"]) == 3
    assert single["miou"] == pytest.approx(model["best_score"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mocov2", "glcnet_m"])
def test_two_process_momentum_methods_keep_per_process_batch_norm(potsdam, tmp_path, method):
    """MoCo v2 and GLCNet-M under DDP (2 gloo processes) run with shuffle-BN over the ranks and per-process
    statistics, the regime they have on GPUs too (tests/test_ddp.py::test_lr_rule_and_sync_batchnorm_switch);
    synchronised batch norm is refused in one line before anything is written."""
    out = tmp_path / method
    run_cli("pretrain", "--config", "pretrain_cpu", "--data", potsdam, "--out", out, "--method", method,
            "optim.epochs=1", "method.queue_size=16", "method.patch_queue_size=32", "method.bn_splits=2", *SMALL, *DDP,
            env=ONE_THREAD)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    keys = [k for k in ckpt["state_dict"] if k.endswith("running_mean")]
    assert any(k.startswith("method.key_net.") for k in keys) and any(k.startswith("method.net.") for k in keys)
    assert ckpt["glcnet"]["config"]["trainer"]["sync_batchnorm"] is None
    refused = run_cli("pretrain", "--config", "pretrain_cpu", "--data", potsdam, "--out", tmp_path / "x",
                      "--method", method, "method.bn_splits=2", "trainer.sync_batchnorm=true", *SMALL, check=False)
    assert refused.returncode == 2 and f"{method} keeps batch norm per process" in refused.stderr
    assert not (tmp_path / "x").exists()
