"""Pretraining methods: registry, feature shapes, forward/backward, exported weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from glcnet.config import PretrainConfig, ViewConfig, from_dict
from glcnet.errors import GlcnetError
from glcnet.losses import MoCoInfoNCE, pool_patches, style_vector
from glcnet.models import DeepLab
from glcnet.ssl import METHOD_NAMES, METHODS, VARIANTS, build_method, check_method_name
from glcnet.ssl.glcnet_m import GLCNetM
from glcnet.ssl.inpainting import block_mask
from glcnet.ssl.jigsaw import max_hamming_permutations
from glcnet.ssl.patches import sample_patches
from glcnet.ssl.vicregl import cell_centres
from glcnet.transforms import ViewGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


TERMS = {
    "glcnet": {"loss_global", "loss_local"},
    "glcnet_no_style": {"loss_global", "loss_local"},
    "glcnet_no_global": {"loss_local"},
    "glcnet_no_local": {"loss_global"},
    "glcnet_fn": {"loss_global", "loss_local"},
    "glcnet_m": {"loss_global", "loss_local"},
    "glcnet_m_fn": {"loss_global", "loss_local"},
    "vicregl": {"loss_global", "loss_local"},
    "simclr": {"loss_contrast"},
    "mocov2": {"loss_contrast"},
    "inpainting": {"loss_mse"},
    "jigsaw": {"loss_ce", "acc"},
}


def tiny_cfg(name: str, **method) -> PretrainConfig:
    """resnet18 on 64 px views; 2x2 jigsaw, small queues, 16 px patches, 2 BatchNorm sub-batches, narrow expanders."""
    return from_dict(PretrainConfig, {
        "model": {"encoder": "resnet18"},
        "views": {"size": 64},
        "method": {"name": name, "patch_num": 3, "patch_size": 16, "queue_size": 16, "patch_queue_size": 32,
                   "bn_splits": 2, "expander_dim": 32, "mask_block": 16, "jigsaw_grid": 2, "jigsaw_permutations": 6,
                   **method},
    })


def no_dropout(method: torch.nn.Module) -> torch.nn.Module:
    """Deterministic forward passes (smp's ASPP has dropout)."""
    for mod in method.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    return method


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
    valid = r"\(valid: none, glcnet, simclr, mocov2, inpainting, jigsaw, glcnet_m, vicregl, glcnet_no_style"
    with pytest.raises(GlcnetError, match=r"unknown method 'byol' " + valid):
        build_method(tiny_cfg("byol"), 3)
    with pytest.raises(GlcnetError, match="nothing to pretrain"):
        build_method(tiny_cfg("none"), 3)
    with pytest.raises(GlcnetError, match="method.lam"):
        build_method(tiny_cfg("glcnet", lam=1.5), 3)
    with pytest.raises(GlcnetError, match="jigsaw"):
        build_method(tiny_cfg("jigsaw", jigsaw_permutations=25), 3)  # 2x2 grid has 4! = 24
    with pytest.raises(GlcnetError, match="bn_splits=3 .* trainer.batch_size=256"):
        build_method(tiny_cfg("mocov2", bn_splits=3), 3)
    with pytest.raises(GlcnetError, match="patch_queue_size"):
        build_method(tiny_cfg("glcnet_m", patch_queue_size=0), 3)
    with pytest.raises(GlcnetError, match="vicregl_cell"):
        build_method(tiny_cfg("vicregl", vicregl_cell=6), 3)
    with pytest.raises(GlcnetError, match="fn_topk"):
        build_method(tiny_cfg("glcnet", fn_topk=-1), 3)


def test_variants_resolve_to_glcnet_options():
    no_style = build_method(tiny_cfg("glcnet_no_style"), 3)
    assert no_style.global_head.dims[0] == 256 and no_style.cfg.method.style is False
    assert build_method(tiny_cfg("glcnet"), 3).global_head.dims[0] == 512  # mean + variance
    no_global = build_method(tiny_cfg("glcnet_no_global"), 3)
    assert no_global.global_head is None and no_global.cfg.method.lam == 0.0
    no_local = build_method(tiny_cfg("glcnet_no_local"), 3)
    assert no_local.local_head is None and no_local.find_unused_parameters
    assert build_method(tiny_cfg("glcnet"), 3).local_loss.ntxent.fn_topk == 0  # off by default
    assert build_method(tiny_cfg("glcnet_fn"), 3).local_loss.ntxent.fn_topk == 16
    m_fn = build_method(tiny_cfg("glcnet_m_fn"), 3)
    assert isinstance(m_fn, GLCNetM) and m_fn.local_loss.fn_topk == 16 and m_fn.global_loss.fn_topk == 0
    m_global = build_method(tiny_cfg("glcnet_m", lam=1.0), 3)  # no local term: no patch queue, no key local head
    assert m_global.patch_queue is None and m_global.key_local_head is None and m_global.find_unused_parameters


@pytest.mark.parametrize("name,bands", [(n, 4 if n in ("glcnet", "glcnet_m", "inpainting") else 3) for n in TERMS])
def test_method_forward_backward_and_export(name, bands):
    torch.manual_seed(0)
    method = build_method(tiny_cfg(name), bands, mean=[0.4] * bands, std=[0.2] * bands)
    out = method(torch.rand(4, bands, 80, 80), generator=torch.Generator().manual_seed(0))
    assert set(out) == TERMS[name] | {"loss", "emb_std"}
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
    assert 0.01 < float(out["emb_std"]) < 1 and not out["emb_std"].requires_grad
    # the loss is the documented combination of its logged terms
    m = method.cfg.method
    weights = {"vicregl": (m.vicregl_alpha, 1 - m.vicregl_alpha), "glcnet_no_global": (0.0, 1.0),
               "glcnet_no_local": (1.0, 0.0)}.get(name, (m.lam, 1 - m.lam))
    if {"loss_global", "loss_local"} <= set(out):
        want = weights[0] * out["loss_global"] + weights[1] * out["loss_local"]
    else:
        want = out[next(k for k in ("loss_contrast", "loss_mse", "loss_ce", "loss_global", "loss_local") if k in out)]
    torch.testing.assert_close(out["loss"], want)
    out["loss"].backward()  # (every loaded weight gets a gradient: tests/test_gradients.py)
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


def naive_ntxent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's NT-Xent by loops: anchor i of 2n, positive i +- n, denominator every k != i."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n2 = z.shape[0]
    terms = []
    for i in range(n2):
        j = (i + n2 // 2) % n2
        den = sum(torch.exp(z[i] @ z[k] / t) for k in range(n2) if k != i)
        terms.append(-torch.log(torch.exp(z[i] @ z[j] / t) / den))
    return torch.stack(terms).mean()


def test_glcnet_loss_is_lambda_mix_of_independently_computed_terms():
    """loss = lam L_global + (1 - lam) L_local, each term recomputed here from the network's maps with
    loops: the style vector (mean, population variance), NT-Xent over the B view pairs, NT-Xent over
    the valid patch pairs pooled at the boxes the method drew (same generator seed)."""
    torch.manual_seed(1)
    method = no_dropout(build_method(tiny_cfg("glcnet", lam=0.3), 3)).eval()
    views = method.views(torch.rand(4, 3, 64, 64))  # views made outside (e.g. DataLoader workers)
    out = method(views, generator=torch.Generator().manual_seed(5))
    assert set(out) == {"loss", "loss_global", "loss_local", "emb_std"}
    with torch.no_grad():
        feats = method.net.features(torch.cat([views.view1, views.view2]))
        a = feats["aspp"].flatten(2)  # [2B, C, hw]
        style = torch.cat([a.mean(2), ((a - a.mean(2, keepdim=True)) ** 2).mean(2)], 1)
        g1, g2 = method.global_head(style).chunk(2)
        glob = naive_ntxent(g1, g2, 0.5)
        b1, b2, valid = sample_patches(views, 3, 16, torch.Generator().manual_seed(5))
        d1, d2 = feats["decoder"].chunk(2)
        z1 = method.local_head(pool_patches(d1, b1, 0.25))[valid]
        z2 = method.local_head(pool_patches(d2, b2, 0.25))[valid]
        local = naive_ntxent(z1, z2, 0.5)
    assert valid.sum() >= 4
    torch.testing.assert_close(out["loss_global"].double(), glob, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["loss_local"].double(), local, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["loss"].double(), 0.3 * glob + 0.7 * local, rtol=1e-4, atol=1e-5)


def test_mocov2_symmetric_loss_queue_and_momentum_update():
    torch.manual_seed(2)
    # plain BatchNorm (bn_splits=1): the keys do not depend on the shuffle, so they can be recomputed here
    method = no_dropout(build_method(tiny_cfg("mocov2", momentum=0.5, bn_splits=1), 3))
    assert all(not p.requires_grad for p in [*method.key_net.parameters(), *method.key_head.parameters()])
    queue0 = method.queue.bank.clone()
    v = method.views(torch.rand(4, 3, 64, 64))
    with torch.no_grad():
        q1, q2 = method.query(v.view1), method.query(v.view2)
        k1, k2 = (F.normalize(method.key_head(method.key_net.features(x)["aspp"].mean(dim=(2, 3))), dim=1)
                  for x in (v.view1, v.view2))
    out = method(v)
    crit = MoCoInfoNCE(0.2)
    expected = 0.5 * (crit(q1, k2, queue0) + crit(q2, k1, queue0))  # both directions, the queue before the step
    torch.testing.assert_close(out["loss"].detach(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(method.queue.bank[:8], torch.cat([k1, k2]), atol=1e-5, rtol=1e-5)  # 2B keys pushed
    torch.testing.assert_close(method.queue.bank[8:], queue0[8:])
    assert int(method.queue.bank_ptr) == 8

    out["loss"].backward()
    torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1).step()
    q0 = method.net.encoder.conv1.weight.detach().clone()
    k0 = method.key_net.encoder.conv1.weight.detach().clone()
    h0 = method.key_head.layers[0].weight.detach().clone()
    method.on_after_step()
    torch.testing.assert_close(method.key_net.encoder.conv1.weight, 0.5 * k0 + 0.5 * q0)
    torch.testing.assert_close(method.key_head.layers[0].weight, 0.5 * h0 + 0.5 * method.head.layers[0].weight)


def test_glcnet_m_terms_queues_and_momentum_update():
    torch.manual_seed(4)
    method = no_dropout(build_method(tiny_cfg("glcnet_m", momentum=0.5, bn_splits=1, lam=0.3), 3))
    style0, patch0 = method.style_queue.bank.clone(), method.patch_queue.bank.clone()
    v = method.views(torch.rand(4, 3, 64, 64))
    torch.manual_seed(9)
    boxes1, boxes2, valid = sample_patches(v, 3, 16)  # the draw forward makes after the same seed
    boxes = torch.cat([boxes1, boxes2])  # [2B, P, 4]
    x = torch.cat([v.view1, v.view2])
    with torch.no_grad():
        f, fk = method.net.features(x), method.key_net.features(x)
        g1, g2 = method.global_head(style_vector(f["aspp"])).chunk(2)
        gk = F.normalize(method.key_global_head(style_vector(fk["aspp"])), dim=1)  # [2B, d]
        z1, z2 = (z.flatten(0, 1) for z in method.local_head(pool_patches(f["decoder"], boxes)).chunk(2))
        zk = F.normalize(method.key_local_head(pool_patches(fk["decoder"], boxes)), dim=-1)  # [2B, P, d]
        zk1, zk2 = (z.flatten(0, 1) for z in zk.chunk(2))
    torch.manual_seed(9)
    out = method(v)
    crit, vf = MoCoInfoNCE(0.2), valid.flatten()
    lg = 0.5 * (crit(g1, gk[4:], style0) + crit(g2, gk[:4], style0))
    ll = 0.5 * (crit(z1, zk2, patch0, vf) + crit(z2, zk1, patch0, vf))
    tol = {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(out["loss_global"].detach(), lg, **tol)
    torch.testing.assert_close(out["loss_local"].detach(), ll, **tol)
    torch.testing.assert_close(out["loss"].detach(), 0.3 * lg + 0.7 * ll, **tol)
    torch.testing.assert_close(method.style_queue.bank[:8], gk, **tol)  # both views' style keys
    n = int(valid.sum()) * 2
    torch.testing.assert_close(method.patch_queue.bank[:n], zk.flatten(0, 1)[torch.cat([vf, vf])], **tol)
    torch.testing.assert_close(method.patch_queue.bank[n:], patch0[n:])  # only valid patches are pushed
    assert int(method.patch_queue.bank_ptr) == n and n > 0

    out["loss"].backward()
    torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1).step()
    k0 = method.key_local_head.mlp[0].weight.detach().clone()
    method.on_after_step()
    torch.testing.assert_close(method.key_local_head.mlp[0].weight, 0.5 * k0 + 0.5 * method.local_head.mlp[0].weight)


@pytest.mark.parametrize("name", ["mocov2", "glcnet_m"])
def test_state_dict_carries_queues_and_key_encoder(name):
    """What ``--resume`` restores: a fresh method loading the state has the same queues and key encoder."""
    torch.manual_seed(5)
    method = build_method(tiny_cfg(name), 3)
    method(torch.rand(4, 3, 64, 64))["loss"].backward()
    method.on_after_step()
    state = method.state_dict()
    queues = [k for k in state if k.endswith(("bank", "bank_ptr"))]
    assert len(queues) == (2 if name == "mocov2" else 4) and any(k.startswith("key_net.") for k in state)
    assert all(int(state[k]) > 0 for k in queues if k.endswith("bank_ptr"))  # keys were pushed
    fresh = build_method(tiny_cfg(name), 3)
    fresh.load_state_dict(state)
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=k)


def test_vicregl_cell_centres_show_the_same_ground():
    """View-1 cell centres mapped into view 2 sample the same image values as in view 1."""
    torch.manual_seed(6)
    smooth = F.interpolate(torch.rand(6, 3, 6, 6), size=(96, 96), mode="bicubic", align_corners=False)
    v = ViewGenerator(ViewConfig(size=64, p_jitter=0.0, p_gray=0.0, p_blur=0.0))(smooth)
    p1, p2 = cell_centres(v, 8)  # [B, 8, 8, 2] each, view-2 pixels
    assert p1.shape == p2.shape == (6, 8, 8, 2)
    torch.testing.assert_close(p2[0, 2, 5], torch.tensor([44.0, 20.0]))  # (x, y) of cell row 2, column 5

    def sample(img, pts):  # bilinear values at view-pixel points
        return F.grid_sample(img, pts / 32 - 1, align_corners=False)  # [B, 3, 8, 8]

    inside = ((p1 >= 0) & (p1 <= 64)).all(-1)  # [B, 8, 8] view-1 cells whose centre is in view 2
    a = sample(v.view1, p2).permute(0, 2, 3, 1)[inside]  # view 1 at its own cell centres
    b = sample(v.view2, p1).permute(0, 2, 3, 1)[inside]  # view 2 at the mapped centres
    assert inside.sum() > 50
    err, wrong = (a - b).abs().mean(), (a - b.roll(1, dims=0)).abs().mean()
    assert err < 0.01 < wrong


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
