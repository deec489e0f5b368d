"""Pretraining methods: registry, feature shapes, forward/backward, exported weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from glcnet.config import PretrainConfig, ViewConfig, from_dict
from glcnet.errors import GlcnetError
from glcnet.losses import pool_patches
from glcnet.models import DeepLab
from glcnet.ssl import METHOD_NAMES, METHODS, VARIANTS, build_method, check_method_name
from glcnet.ssl.inpainting import block_mask
from glcnet.ssl.jigsaw import max_hamming_permutations
from glcnet.ssl.patches import sample_patches
from glcnet.transforms import ViewGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


TERMS = {
    "glcnet": {"loss_global", "loss_local"},
    "glcnet_no_style": {"loss_global", "loss_local"},
    "glcnet_no_global": {"loss_local"},
    "glcnet_no_local": {"loss_global"},
    "simclr": {"loss_contrast"},
    "mocov2": {"loss_contrast"},
    "inpainting": {"loss_mse"},
    "jigsaw": {"loss_ce", "acc"},
}


def tiny_cfg(name: str, **method) -> PretrainConfig:
    """resnet18 on 64 px views; 2x2 jigsaw, small queue, 16 px patches."""
    return from_dict(PretrainConfig, {
        "model": {"encoder": "resnet18"},
        "views": {"size": 64},
        "method": {"name": name, "patch_num": 3, "patch_size": 16, "queue_size": 16, "mask_block": 16,
                   "jigsaw_grid": 2, "jigsaw_permutations": 6, **method},
    })


@pytest.mark.parametrize("bands", [3, 4])
def test_feature_shapes(bands):
    net = DeepLab("resnet18", in_channels=bands)
    out = net(torch.rand(2, bands, 64, 64))
    assert out["aspp"].shape == (2, 256, 4, 4)
    assert out["decoder"].shape == (2, 256, 16, 16)
    assert "logits" not in out
    seg = DeepLab("resnet18", in_channels=bands, num_classes=5)
    assert seg(torch.rand(2, bands, 64, 64))["logits"].shape == (2, 5, 64, 64)


def test_registry_names_and_errors():
    assert set(TERMS) == set(METHODS) | set(VARIANTS)
    assert set(METHOD_NAMES) == {"none"} | set(TERMS)
    assert check_method_name("none") == "none"
    valid = r"\(valid: none, glcnet, simclr, mocov2, inpainting, jigsaw, glcnet_no_style"
    with pytest.raises(GlcnetError, match=r"unknown method 'byol' " + valid):
        build_method(tiny_cfg("byol"), 3)
    with pytest.raises(GlcnetError, match="nothing to pretrain"):
        build_method(tiny_cfg("none"), 3)
    with pytest.raises(GlcnetError, match="method.lam"):
        build_method(tiny_cfg("glcnet", lam=1.5), 3)
    with pytest.raises(GlcnetError, match="jigsaw"):
        build_method(tiny_cfg("jigsaw", jigsaw_permutations=25), 3)  # 2x2 grid has 4! = 24


def test_variants_resolve_to_glcnet_options():
    no_style = build_method(tiny_cfg("glcnet_no_style"), 3)
    assert no_style.global_head.dims[0] == 256 and no_style.cfg.method.style is False
    assert build_method(tiny_cfg("glcnet"), 3).global_head.dims[0] == 512  # mean + variance
    no_global = build_method(tiny_cfg("glcnet_no_global"), 3)
    assert no_global.global_head is None and no_global.cfg.method.lam == 0.0
    no_local = build_method(tiny_cfg("glcnet_no_local"), 3)
    assert no_local.local_head is None and no_local.find_unused_parameters


@pytest.mark.parametrize("name,bands", [(n, 4 if n in ("glcnet", "inpainting") else 3) for n in TERMS])
def test_method_forward_backward_and_export(name, bands):
    torch.manual_seed(0)
    method = build_method(tiny_cfg(name), bands, mean=[0.4] * bands, std=[0.2] * bands)
    out = method(torch.rand(4, bands, 80, 80))
    assert TERMS[name] <= set(out) and {"loss", "emb_std"} <= set(out)
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
    assert float(out["emb_std"]) > 0 and not out["emb_std"].requires_grad
    out["loss"].backward()
    conv1 = method.net.encoder.conv1.weight.grad
    assert conv1 is not None and torch.isfinite(conv1).all() and conv1.abs().sum() > 0

    state = method.pretrained_state_dict()
    assert {k.split(".")[0] for k in state} == {"encoder", "decoder", "mean", "std"}
    fresh = DeepLab("resnet18", in_channels=bands, num_classes=0)
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(fresh.mean.flatten(), torch.full((bands,), 0.4))


@pytest.mark.parametrize("stride", [1, 4])
def test_matched_patches_pool_to_the_same_ground(stride):
    """Views + sample_patches + pool_patches agree on coordinates (full res and decoder's 1/4)."""
    torch.manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(6, 3, 6, 6), size=(96, 96), mode="bicubic", align_corners=False)
    cfg = ViewConfig(size=64, p_jitter=0.0, p_gray=0.0, p_blur=0.0)  # geometry only
    v = ViewGenerator(cfg)(smooth)
    boxes1, boxes2, valid = sample_patches(v, 4, 16)
    maps = [torch.nn.functional.avg_pool2d(x, stride) for x in (v.view1, v.view2)]  # [B, 3, 64/stride, ...]
    p1 = pool_patches(maps[0], boxes1, 1 / stride)[valid]  # [n, 3]
    p2 = pool_patches(maps[1], boxes2, 1 / stride)[valid]
    assert valid.sum() >= 6
    err = (p1 - p2).abs().mean()
    wrong = (p1 - p2.roll(1, dims=0)).abs().mean()  # mismatched pairs
    assert err < 0.01 < wrong and err < wrong / 5


def test_glcnet_loss_is_lambda_mix():
    torch.manual_seed(1)
    method = build_method(tiny_cfg("glcnet", lam=0.3), 3)
    out = method(method.views(torch.rand(4, 3, 64, 64)))  # views made outside (e.g. DataLoader workers)
    expected = 0.3 * out["loss_global"] + 0.7 * out["loss_local"]
    torch.testing.assert_close(out["loss"], expected)


def test_mocov2_momentum_update_and_queue():
    torch.manual_seed(2)
    method = build_method(tiny_cfg("mocov2", momentum=0.5), 3)
    assert all(not p.requires_grad for p in method.key_net.parameters())
    queue0 = method.queue.clone()
    out = method(torch.rand(4, 3, 64, 64))
    out["loss"].backward()
    torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1).step()
    q0 = method.net.encoder.conv1.weight.detach().clone()
    k0 = method.key_net.encoder.conv1.weight.detach().clone()
    keys = method._pending[0].clone()  # [4, d] normalised keys of this step
    method.on_after_step()
    torch.testing.assert_close(method.key_net.encoder.conv1.weight, 0.5 * k0 + 0.5 * q0)
    torch.testing.assert_close(method.queue[:4], keys)  # oldest rows replaced
    torch.testing.assert_close(method.queue[4:], queue0[4:])
    assert int(method.queue_ptr) == 4 and not method._pending
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(4))


def test_block_mask_exact_fraction_on_grid():
    mask = block_mask(3, 64, 16, 0.25)  # 4x4 cells, 4 masked per image
    assert mask.shape == (3, 1, 64, 64) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [4 * 16 * 16] * 3
    cells = mask[:, 0].reshape(3, 4, 16, 4, 16)
    assert (cells.all(dim=(2, 4)) == cells.any(dim=(2, 4))).all()  # whole blocks only


def test_jigsaw_tiles_come_from_their_cells():
    method = build_method(tiny_cfg("jigsaw", jigsaw_grid=3), 1)  # 64 // 3 = 21 -> 16 px tiles
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    img = (y * 1000 + x)[None, None].repeat(2, 1, 1, 1)  # pixel value encodes its position
    tiles = method.tiles(img)  # [B, 9, 1, 16, 16]
    assert tiles.shape == (2, 9, 1, 16, 16)
    for i in range(9):
        y0, x0 = divmod(int(tiles[0, i, 0, 0, 0]), 1000)
        assert i // 3 * 21 <= y0 <= i // 3 * 21 + 5 and i % 3 * 21 <= x0 <= i % 3 * 21 + 5
        torch.testing.assert_close(tiles[0, i, 0], img[0, 0, y0:y0 + 16, x0:x0 + 16])


def test_jigsaw_permutations_distinct_far_apart_deterministic():
    perms = max_hamming_permutations(1000, 9, seed=0)
    assert perms.shape == (1000, 9)
    assert (np.sort(perms, axis=1) == np.arange(9)).all()  # each row is a permutation
    assert len({tuple(p) for p in perms}) == 1000

    def min_hamming(p: np.ndarray) -> int:
        return int(((p[:, None, :] != p[None, :, :]).sum(-1) + 10 * np.eye(len(p), dtype=int)).min())

    rand = np.stack([np.random.default_rng(i).permutation(9) for i in range(100)])
    assert min_hamming(perms[:100]) > min_hamming(rand)  # greedy max-min beats random choice
    np.testing.assert_array_equal(max_hamming_permutations(50, 9, seed=0), perms[:50])  # same greedy sequence
    small = max_hamming_permutations(24, 4)
    assert sorted(map(tuple, small)) == list(itertools.permutations(range(4)))  # all of 4!
