"""Two-view generation: correspondence against brute-force index maps, patch properties,
photometric maths, DataLoader use, and the benchmark's plumbing (never its timings)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from glcnet.config import ViewConfig
from glcnet.errors import GlcnetError
from glcnet.ssl.patches import sample_patches
from glcnet.transforms import ViewCollate, ViewGenerator, Views
from glcnet.transforms.geometry import flip_rot_dims, map_points, random_boxes
from glcnet.transforms.photometric import LUMA, blur_planes, color_matrices, gaussian_blur
from glcnet.transforms.render_torch import render
from glcnet.transforms.render_uint8 import render_uint8

NO_PHOTO = dict(p_jitter=0.0, p_gray=0.0, p_blur=0.0)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def all_combos(views: Views) -> Views:
    """Give the 16 samples every hflip x vflip x rot combination."""
    i = torch.arange(16, device=views.box1.device)
    return dataclasses.replace(views, hflip=i % 2 == 1, vflip=(i // 2) % 2 == 1, rot=i // 4)


def naive_index_view(height: int, width: int, box, size: int, hflip=False, vflip=False, rot=0) -> np.ndarray:
    """Brute force, straight from the definitions: pixel (i, j) of the resized crop shows
    source pixel floor(y0 + (i + .5) h / s), floor(x0 + (j + .5) w / s); then np.flip and
    torch.rot90. Value = source index row * W + col."""
    x0, y0, x1, y1 = [float(v) for v in box]
    c = np.floor(x0 + (np.arange(size) + 0.5) * (x1 - x0) / size).clip(0, width - 1).astype(np.int64)
    r = np.floor(y0 + (np.arange(size) + 0.5) * (y1 - y0) / size).clip(0, height - 1).astype(np.int64)
    v = r[:, None] * width + c[None, :]
    if hflip:
        v = v[:, ::-1]
    if vflip:
        v = v[::-1, :]
    return torch.rot90(torch.from_numpy(v.copy()), int(rot), dims=(-2, -1)).numpy()


def make_views(b=16, height=40, width=48, size=64, seed=0, device="cpu", **cfg) -> tuple[Views, torch.Tensor]:
    """Views of an index image; crops with a wide ratio range so most are far from square."""
    cfg = {"size": size, "ratio": (0.5, 2.0), "rgb_bands": None, **NO_PHOTO, **cfg}
    index = torch.arange(height * width, dtype=torch.float32).reshape(1, 1, height, width)
    images = index.expand(b, 1, height, width).contiguous().to(device)
    g = torch.Generator().manual_seed(seed)
    return ViewGenerator(ViewConfig(**cfg))(images, g), images


# ----------------------------------------------------------------------------- geometry
def test_render_of_whole_tile_is_bilinear_resize():
    x = torch.rand(2, 3, 30, 42)
    box = torch.tensor([[0.0, 0, 42, 30]] * 2)
    ref = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(render(x, box, 24), ref, atol=1e-5)


def test_flips_and_rotation_folded_into_the_grid():
    x = torch.rand(16, 2, 40, 48)
    views, _ = make_views()
    views = all_combos(views)
    box = views.box2.clone()
    plain = render(x, box, 20)
    got = render(x, box, 20, views.hflip, views.vflip, views.rot)  # one batched call
    for b in range(16):
        want = plain[b]
        if views.hflip[b]:
            want = want.flip(-1)
        if views.vflip[b]:
            want = want.flip(-2)
        want = torch.rot90(want, int(views.rot[b]), dims=(-2, -1))
        assert torch.allclose(got[b], want, atol=1e-5), b


@pytest.mark.parametrize("device", DEVICES)
def test_correspondence_against_brute_force_index_maps(device):
    height, width, s = 40, 48, 64  # upsampling: w/s < 1, so nearest rounding moves < 1 source px
    views, index = make_views(height=height, width=width, size=s, device=device)
    views = all_combos(views)
    box1, box2 = views.box1.cpu(), views.box2.cpu()
    aspect = (box1[:, 2] - box1[:, 0]) / (box1[:, 3] - box1[:, 1])
    assert ((aspect - 1).abs() > 0.05).sum() >= 12  # non-square crops
    v1 = np.stack([naive_index_view(height, width, box1[b], s) for b in range(16)])
    v2 = np.stack([naive_index_view(height, width, box2[b], s, bool(views.hflip[b]), bool(views.vflip[b]),
                                    int(views.rot[b])) for b in range(16)])
    # our batched grid renders the same index maps (ties at exact pixel borders aside)
    r1 = render(index, views.box1, s, mode="nearest")[:, 0].cpu().numpy()
    r2 = render(index, views.box2, s, views.hflip, views.vflip, views.rot, mode="nearest")[:, 0].cpu().numpy()
    assert (r1 == v1).mean() > 0.999 and (r2 == v2).mean() > 0.999

    # patch centres and inner corners, plus random points of the overlap: analytic map vs index maps
    b1, _, valid = sample_patches(views, 4, 10, torch.Generator().manual_seed(1))
    assert valid.any(1).all()
    b1 = b1.cpu()
    ctr = (b1[..., :2] + b1[..., 2:]) / 2
    pts = torch.cat([ctr, b1[..., :2] + 0.25, b1[..., 2:] - 0.25], 1)  # [B, 12, 2]
    ok = torch.cat([valid.cpu()] * 3, 1)
    q = map_points(views, pts.to(device)).cpu()
    assert ((q >= 0) & (q <= s)).all(-1)[ok].all()

    def src(view: np.ndarray, p: torch.Tensor) -> np.ndarray:  # (row, col) of the source pixel shown at p
        ij = p.floor().long().clamp(0, s - 1).numpy()
        v = view[np.arange(16)[:, None], ij[..., 1], ij[..., 0]]
        return np.stack([v // width, v % width], -1)

    d = np.abs(src(v1, pts) - src(v2, q))[ok.numpy()]
    assert d.max() <= 1, d.max()
    # the test has teeth: a map that ignores the rotation fails it
    wrong = map_points(dataclasses.replace(views, rot=(views.rot + 1) % 4), pts.to(device)).cpu()
    d_wrong = np.abs(src(v1, pts) - src(v2, wrong.clamp(0, s - 1e-3)))[ok.numpy()]
    assert d_wrong.max() > 3


# ----------------------------------------------------------------------------- patches
def to_source(box: torch.Tensor, pts: torch.Tensor, s: int) -> torch.Tensor:
    """View (unflipped) coords -> source coords: x0 + u w / s, written out independently."""
    wh = (box[:, 2:] - box[:, :2])[:, None] / s
    return box[:, None, :2] + pts * wh


@pytest.mark.parametrize("patch_num,patch_size", [(4, 12), (9, 8), (3, 20)])
def test_patches_inside_both_views_and_the_overlap_and_disjoint(patch_num, patch_size):
    s = 48
    views, _ = make_views(b=64, height=64, width=64, size=s, seed=3, scale=(0.3, 1.0), ratio=(0.75, 1.33))
    b1, b2, valid = sample_patches(views, patch_num, patch_size, torch.Generator().manual_seed(0))
    assert b1.shape == b2.shape == (64, patch_num, 4) and valid.shape == (64, patch_num)
    eps = 1e-3
    side = b1[..., 2] - b1[..., 0]
    assert torch.allclose(side, b1[..., 3] - b1[..., 1], atol=1e-4)  # squares in view 1
    assert (side[valid] <= patch_size + 1e-4).all() and (side[valid] >= patch_size / 2 - 1e-4).all()
    for bx in (b1, b2):
        assert ((bx[valid] >= -eps) & (bx[valid] <= s + eps)).all()
    # view-1 patches lie inside the source overlap box1 n box2
    lo = torch.maximum(views.box1[:, :2], views.box2[:, :2])[:, None]
    hi = torch.minimum(views.box1[:, 2:], views.box2[:, 2:])[:, None]
    src_lo, src_hi = to_source(views.box1, b1[..., :2], s), to_source(views.box1, b1[..., 2:], s)
    inside = ((src_lo >= lo - eps) & (src_hi <= hi + eps)).all(-1)
    assert inside[valid].all()
    # boxes2 is the exact image of boxes1
    corners = map_points(views, b1.reshape(64, -1, 2)).reshape(64, patch_num, 2, 2)
    want = torch.cat([corners.amin(2), corners.amax(2)], -1)
    assert torch.allclose(b2[valid], want[valid].clamp(0, s), atol=1e-3)
    # pairwise disjoint (touching allowed)
    ix = (torch.minimum(b1[:, :, None, 2], b1[:, None, :, 2]) - torch.maximum(b1[:, :, None, 0], b1[:, None, :, 0])).clamp(min=0)
    iy = (torch.minimum(b1[:, :, None, 3], b1[:, None, :, 3]) - torch.maximum(b1[:, :, None, 1], b1[:, None, :, 1])).clamp(min=0)
    both = valid[:, :, None] & valid[:, None, :] & ~torch.eye(patch_num, dtype=torch.bool)
    assert (ix * iy)[both].max() < 1e-3
    # where the overlap easily holds them, all patches are placed
    ext = ((hi - lo)[:, 0] * s / (views.box1[:, 2:] - views.box1[:, :2])).min(1).values
    big = ext >= math.ceil(math.sqrt(patch_num)) * patch_size + 1
    assert big.sum() > 5 and valid[big].all()


def manual_views(box1, box2, s=48, b=None) -> Views:
    box1, box2 = torch.tensor(box1, dtype=torch.float32), torch.tensor(box2, dtype=torch.float32)
    n = box1.shape[0]
    z = torch.zeros(n, 1, s, s)
    return Views(z, z, box1, box2, torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool),
                 torch.ones(n, dtype=torch.long), s)


def test_patches_degrade_gracefully():
    # views of side 48 over 48x48 crops (1 source px = 1 view px)
    views = manual_views([[0, 0, 48, 48]] * 5,
                         [[100, 100, 148, 148],  # disjoint: nothing
                          [40, 0, 88, 48],  # 8 px wide strip: thinner than min_size 6? no: side 8 -> 6 patches max
                          [24, 0, 72, 48],  # 24 x 48 overlap: 2 x 4 cells of 12
                          [24, 24, 72, 72],  # 24 x 24: exactly a 2 x 2 grid of 12
                          [45, 0, 93, 48]])  # 3 px strip: below min_size -> nothing
    b1, b2, valid = sample_patches(views, 4, 12, torch.Generator().manual_seed(0))
    assert valid.sum(1).tolist() == [0, 4, 4, 4, 0]
    assert (b1[~valid] == 0).all() and (b2[~valid] == 0).all()
    side = b1[..., 2] - b1[..., 0]
    assert torch.allclose(side[1][valid[1]], torch.tensor(8.0)) and torch.allclose(side[3], torch.tensor(12.0))
    # more patches than fit: fewer, never a hang or a crash
    b1, _, valid = sample_patches(views, 20, 12, torch.Generator().manual_seed(0))
    assert valid.sum(1).tolist() == [0, 6, 8, 4, 0]


def test_patches_reproducible_per_seed():
    views, _ = make_views(b=8, seed=5)
    a = sample_patches(views, 4, 10, torch.Generator().manual_seed(7))
    b = sample_patches(views, 4, 10, torch.Generator().manual_seed(7))
    c = sample_patches(views, 4, 10, torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    with pytest.raises(GlcnetError):
        sample_patches(views, 0, 10)


# ----------------------------------------------------------------------------- uint8 CPU path
def test_random_boxes_are_integer_crops_of_the_allowed_shapes():
    boxes = random_boxes(4000, 60, 80, (0.3, 1.0), (0.75, 1.33), torch.Generator().manual_seed(0))
    assert torch.equal(boxes, boxes.round())
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 60).all() and (w >= 1).all()
    area = w * h / (60 * 80)
    assert area.min() > 0.3 - 0.03 and area.max() <= 1 and (w / h).min() > 0.75 - 0.05 and (w / h).max() < 1.33 + 0.05
    assert boxes[:, 0].unique().numel() > 10 and boxes[:, 1].unique().numel() > 10  # placed anywhere
    tall = random_boxes(10, 10, 100, (0.99, 1.0), (1.0, 1.0))  # nothing square fits: clamped central crop
    assert torch.equal(tall, torch.tensor([[45.0, 0, 55, 10]]).expand(10, 4))


def test_flip_rot_dims_is_the_composed_transform():
    x = torch.arange(2 * 5 * 5).reshape(2, 5, 5)
    for h in (False, True):
        for v in (False, True):
            for k in range(4):
                want = x.flip(-1) if h else x
                want = want.flip(-2) if v else want
                want = torch.rot90(want, k, dims=(-2, -1))
                dims, transpose = flip_rot_dims(h, v, k)
                got = x.flip(dims) if dims else x
                assert torch.equal(got.mT if transpose else got, want), (h, v, k)


@pytest.mark.parametrize("bands", [1, 3, 4, 6])
def test_uint8_path_equals_the_float_path_up_to_rounding(bands):
    """Same parameters, same geometry for every flip/rotation; values within the uint8 rounding."""
    g = torch.Generator().manual_seed(bands)
    x8 = torch.randint(0, 256, (16, bands, 50, 60), dtype=torch.uint8, generator=g)
    x8 = x8.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) if bands == 4 else x8  # NHWC input too
    rgb = (0, 1, 2) if bands >= 3 else None
    geo = ViewConfig(size=40, ratio=(0.5, 2.0), rgb_bands=rgb, **NO_PHOTO)
    a = ViewGenerator(geo)(x8, torch.Generator().manual_seed(0))
    b = ViewGenerator(geo)(x8.float() / 255, torch.Generator().manual_seed(0))
    assert a.view1.dtype == torch.float32 and a.view1.shape == (16, bands, 40, 40)
    assert a.rot.unique().numel() > 2 and a.hflip.any() and not a.hflip.all()
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("box1", "box2", "hflip", "vflip", "rot"))
    assert (a.view1 - b.view1).abs().max() <= 1.01 / 255 and (a.view2 - b.view2).abs().max() <= 1.01 / 255
    full = ViewConfig(size=40, rgb_bands=rgb, p_jitter=1.0, p_gray=0.3, p_blur=0.5)
    a = ViewGenerator(full)(x8, torch.Generator().manual_seed(1))
    b = ViewGenerator(full)(x8.float() / 255, torch.Generator().manual_seed(1))
    assert a.view2.min() >= 0 and a.view2.max() <= 1
    assert (a.view2 - b.view2).abs().max() <= 3 / 255  # colour gains up to 1.4 x contrast 1.4 on the rounding


def test_uint8_path_correspondence_against_coordinate_ramps():
    """Brute force through the uint8 kernel: bands hold each pixel's row and column, so a
    view pixel's value is the source position it shows (bilinear of a ramp is exact)."""
    height, width, s = 60, 56, 48
    rows = torch.arange(height, dtype=torch.uint8)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.uint8)[None, :].expand(height, width)
    x8 = torch.stack([rows, cols, rows]).expand(16, 3, height, width).contiguous()
    cfg = ViewConfig(size=s, scale=(0.3, 1.0), ratio=(0.6, 1.6), rgb_bands=None, **NO_PHOTO)
    views = all_combos(ViewGenerator(cfg)(x8, torch.Generator().manual_seed(0)))
    p = {"box1": views.box1, "box2": views.box2, "hflip": views.hflip, "vflip": views.vflip, "rot": views.rot,
         "a": torch.eye(3).expand(16, 3, 3), "k": torch.zeros(16, 3, 3), "blur": torch.zeros(16, dtype=torch.bool),
         "sigma": torch.ones(16), "radius": torch.ones(16, dtype=torch.long)}
    p["color"] = torch.zeros(16, dtype=torch.bool)
    view1, view2 = render_uint8(x8, p, s)  # re-rendered with all 16 flip/rotation combinations
    b1, _, valid = sample_patches(views, 4, 8, torch.Generator().manual_seed(1))
    assert valid.all(1).sum() > 8
    ctr = (b1[..., :2] + b1[..., 2:]) / 2  # [B, P, 2] (x, y) view-1 points
    q = map_points(views, ctr)

    def pos(view: torch.Tensor, pt: torch.Tensor) -> torch.Tensor:  # (row, col) shown at the pixel holding pt
        ij = pt.floor().long().clamp(0, s - 1)
        bi = torch.arange(16)[:, None]
        return torch.stack([view[bi, 0, ij[..., 1], ij[..., 0]], view[bi, 1, ij[..., 1], ij[..., 0]]], -1) * 255

    d = (pos(view1, ctr) - pos(view2, q)).abs()[valid]
    assert d.max() <= 2.0, d.max()  # one pixel of each view + rounding
    wrong = map_points(dataclasses.replace(views, hflip=~views.hflip), ctr).clamp(0, s - 1e-3)
    assert (pos(view1, ctr) - pos(view2, wrong)).abs()[valid].max() > 5  # the test has teeth


# ----------------------------------------------------------------------------- photometric
def test_view1_untouched_and_view2_purely_geometric_without_photometric():
    x = torch.rand(6, 5, 50, 60)
    gen = ViewGenerator(ViewConfig(size=32, **NO_PHOTO))
    v = gen(x, torch.Generator().manual_seed(0))
    assert torch.equal(v.view1, render(x, v.box1, 32))
    assert torch.equal(v.view2, render(x, v.box2, 32, v.hflip, v.vflip, v.rot))


def test_contrast_keeps_band_means_and_blur_smooths_every_sample():
    x = 0.3 + 0.4 * torch.rand(6, 4, 40, 40)  # contrast <= 1.4 cannot clip these
    cfg = ViewConfig(size=32, p_jitter=1.0, p_gray=0.0, p_blur=0.0, brightness=0.0, contrast=0.4,
                     saturation=0.0, hue=0.0, rgb_bands=None)
    v = ViewGenerator(cfg)(x, torch.Generator().manual_seed(0))
    geo = render(x, v.box2, 32, v.hflip, v.vflip, v.rot)
    assert torch.allclose(v.view2.mean((2, 3)), geo.mean((2, 3)), atol=1e-5)
    ratio = v.view2.std((2, 3)) / geo.std((2, 3))  # = the per-band contrast factor
    assert (ratio >= 0.6 - 1e-4).all() and (ratio <= 1.4 + 1e-4).all() and ratio.std() > 0.01

    cfg = ViewConfig(size=32, p_jitter=0.0, p_gray=0.0, p_blur=1.0, blur_sigma=(1.0, 2.0))
    v = ViewGenerator(cfg)(x, torch.Generator().manual_seed(0))
    geo = render(x, v.box2, 32, v.hflip, v.vflip, v.rot)

    def tv(y: torch.Tensor) -> torch.Tensor:
        return (y.diff(dim=-1).abs().mean((1, 2, 3)) + y.diff(dim=-2).abs().mean((1, 2, 3)))

    assert (tv(v.view2) < 0.7 * tv(geo)).all()
    assert torch.allclose(v.view2.mean((1, 2, 3)), geo.mean((1, 2, 3)), atol=2e-2)


def test_photometric_values_in_range_for_any_band_count():
    for c, rgb in [(1, None), (4, (0, 1, 2)), (6, (2, 1, 0))]:
        cfg = ViewConfig(size=24, p_jitter=1.0, p_gray=0.5, p_blur=0.5, brightness=0.9, contrast=0.9,
                         saturation=0.9, hue=0.5, rgb_bands=rgb)
        x = torch.rand(8, c, 32, 32)
        v = ViewGenerator(cfg)(x, torch.Generator().manual_seed(c))
        assert v.view2.shape == (8, c, 24, 24) and v.view2.min() >= 0 and v.view2.max() <= 1
        assert not torch.allclose(v.view2, render(x, v.box2, 24, v.hflip, v.vflip, v.rot))


def test_grayscale_only_touches_rgb_bands():
    x = torch.rand(4, 5, 32, 32)
    v = ViewGenerator(ViewConfig(size=16, p_jitter=0.0, p_gray=1.0, p_blur=0.0, rgb_bands=(0, 2, 4)))(x)
    geo = render(x, v.box2, 16, v.hflip, v.vflip, v.rot)
    luma = sum(w * geo[:, i] for w, i in zip(LUMA, (0, 2, 4)))
    for i in (0, 2, 4):
        assert torch.allclose(v.view2[:, i], luma, atol=1e-5)
    assert torch.equal(v.view2[:, [1, 3]], geo[:, [1, 3]])


def test_color_matrices_maths():
    b = 5
    hue = torch.tensor([0.0, 0.1, -0.3, 0.5, 0.25])
    one = torch.ones(b)
    on, off = torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)
    # hue rotation preserves luma and chroma magnitude (saturation 1)
    a, k = color_matrices(3, (0, 1, 2), on, off, torch.ones(b, 3), torch.ones(b, 3), one, hue)
    assert torch.allclose(a[0], torch.eye(3), atol=1e-6) and torch.allclose(k, torch.zeros_like(k))
    luma = torch.tensor(LUMA)
    assert torch.allclose(luma @ a, luma.expand(b, 3), atol=1e-5)
    # saturation 0 -> every RGB band becomes the luma; non-RGB band untouched
    a, _ = color_matrices(4, (0, 1, 2), on, off, torch.ones(b, 4), torch.ones(b, 4), 0 * one, hue)
    assert torch.allclose(a[:, :3, :3], luma.expand(b, 3, 3), atol=1e-5)
    assert torch.equal(a[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(b, 4))
    # brightness b and contrast c per band: x -> c b x + (1 - c) b m
    bright, contrast = torch.rand(b, 2) + 0.5, torch.rand(b, 2) + 0.5
    a, k = color_matrices(2, None, on, off, bright, contrast, one, hue)
    assert torch.allclose(a, torch.diag_embed(bright * contrast)) and torch.allclose(k, torch.diag_embed((1 - contrast) * bright))
    # not selected -> exact identity
    a, k = color_matrices(4, (0, 1, 2), off, off, bright.repeat(1, 2), contrast.repeat(1, 2), 0 * one, hue)
    assert torch.equal(a, torch.eye(4).expand(b, 4, 4)) and torch.equal(k, torch.zeros(b, 4, 4))


def test_gaussian_blur_per_sample_sigma():
    x = torch.zeros(3, 2, 31, 31)
    x[:, :, 15, 15] = 1
    sigma = torch.tensor([0.5, 1.0, 2.0])
    y = gaussian_blur(x, sigma)
    for i, sg in enumerate(sigma.tolist()):
        r = math.ceil(3 * 2.0)
        t = torch.arange(-r, r + 1.0)
        k1 = torch.exp(-t ** 2 / (2 * sg ** 2))
        k1 = k1 / k1.sum()
        assert torch.allclose(y[i, 0, 15, 15], k1[r] ** 2, atol=1e-6)
        assert torch.allclose(y[i, 1, 15 - r:16 + r, 15 - r:16 + r], torch.outer(k1, k1), atol=1e-6)
    flat = gaussian_blur(torch.full((2, 1, 20, 20), 0.3), torch.tensor([0.3, 2.0]))
    assert torch.allclose(flat, torch.full_like(flat, 0.3), atol=1e-6)


@pytest.mark.parametrize("radius", [1, 2, 6])
def test_blur_planes_equals_gaussian_blur(radius):
    x = torch.rand(3, 20, 27)
    sigma = radius / 3 + 0.1
    want = gaussian_blur(x[None], torch.tensor([sigma]), radius)[0]
    got = blur_planes(x, sigma, radius)
    assert got.shape == x.shape and torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, x, atol=1e-2)


# ----------------------------------------------------------------------------- generator
def test_generator_reproducible_and_bad_input():
    x = torch.rand(8, 4, 40, 40)
    gen = ViewGenerator(ViewConfig(size=24))
    a, b = gen(x, torch.Generator().manual_seed(0)), gen(x, torch.Generator().manual_seed(0))
    c = gen(x, torch.Generator().manual_seed(1))
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("view1", "view2", "box1", "rot"))
    assert not torch.equal(a.box1, c.box1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # chunking applies on one thread
    try:
        chunked = ViewGenerator(ViewConfig(size=24, cpu_chunk=3))(x, torch.Generator().manual_seed(0))
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(chunked.view1, a.view1, atol=1e-6) and torch.allclose(chunked.view2, a.view2, atol=1e-6)
    with pytest.raises(GlcnetError, match="float tiles"):
        gen((x * 255).to(torch.int32))
    with pytest.raises(GlcnetError, match="rgb_bands"):
        gen(torch.rand(2, 2, 40, 40))
    with pytest.raises(GlcnetError, match="views.scale"):
        ViewGenerator(ViewConfig(scale=(0.5, 1.5)))
    with pytest.raises(GlcnetError, match="views.p_blur"):
        ViewGenerator(ViewConfig(p_blur=2.0))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_cpu_views_do_not_depend_on_the_thread_count_and_restore_it(dtype):
    x8 = torch.randint(0, 256, (6, 5, 40, 44), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = x8 if dtype == torch.uint8 else x8.float() / 255
    gen = ViewGenerator(ViewConfig(size=32, p_jitter=1.0, p_gray=0.3, p_blur=1.0, rgb_bands=(0, 1, 2)))
    threads = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out[n] = gen(x, torch.Generator().manual_seed(0))
            assert torch.get_num_threads() == n  # the caller's (training) threads are back
    finally:
        torch.set_num_threads(threads)
    for n in (2, 3):
        assert torch.allclose(out[1].view1, out[n].view1, atol=1e-6)
        assert torch.allclose(out[1].view2, out[n].view2, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_views_and_patches_are_float32_exact_inside_autocast(dtype):
    """A bf16 mixed-precision step must neither break the views nor round the patch boxes."""
    x8 = torch.randint(0, 256, (4, 4, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = x8 if dtype == torch.uint8 else x8.float() / 255
    gen = ViewGenerator(ViewConfig(size=48, p_jitter=1.0, p_blur=1.0))
    ref = gen(x, torch.Generator().manual_seed(0))
    ref_p = sample_patches(ref, 4, 12, torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gen(x, torch.Generator().manual_seed(0))
        got_p = sample_patches(got, 4, 12, torch.Generator().manual_seed(1))
    assert got.view2.dtype == torch.float32 and torch.equal(got.view2, ref.view2)
    for a, b in zip(ref_p, got_p):
        assert torch.equal(a, b)


def test_for_each_sample_hands_out_every_index_once_on_one_intra_op_thread():
    import threading

    from glcnet.utils.threads import for_each_sample, torch_threads

    seen, intra, names = [], [], set()

    def work(indices):
        for i in indices:
            seen.append(i)
            intra.append(torch.get_num_threads())
            names.add(threading.current_thread().name)

    with torch_threads(3):
        for_each_sample(50, work)
        assert torch.get_num_threads() == 3
    assert sorted(seen) == list(range(50)) and set(intra) == {1} and len(names) >= 1

    def fail(indices):
        for i in indices:
            if i == 7:
                raise ValueError("sample 7")

    with pytest.raises(ValueError, match="sample 7"):
        for_each_sample(20, fail, workers=2)


def test_dataloader_workers_reproducible():
    data = [{"image": torch.rand(4, 40, 40)} for _ in range(6)]
    cfg = ViewConfig(size=24)

    def run() -> list[Views]:
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=1, collate_fn=ViewCollate(cfg))
        return list(loader)

    a, b = run(), run()
    assert len(a) == 2 and isinstance(a[0], Views) and a[0].view2.shape == (3, 4, 24, 24)
    assert all(torch.equal(x.view2, y.view2) and torch.equal(x.box2, y.box2) for x, y in zip(a, b))
    moved = a[0].to("cpu")
    assert moved.size == 24 and torch.equal(moved.rot, a[0].rot)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_same_seed_same_views_on_gpu():
    x = torch.rand(8, 4, 64, 64)
    gen = ViewGenerator(ViewConfig(size=48))
    a = gen(x, torch.Generator().manual_seed(0))
    b = gen(x.cuda(), torch.Generator().manual_seed(0))
    assert b.view2.is_cuda and torch.equal(a.box2, b.box2.cpu()) and torch.equal(a.rot, b.rot.cpu())
    assert torch.allclose(a.view2, b.view2.cpu(), atol=1e-4)
    pa = sample_patches(a, 4, 12, torch.Generator().manual_seed(0))
    pb = sample_patches(b, 4, 12, torch.Generator().manual_seed(0))
    assert torch.equal(pa[2], pb[2].cpu()) and torch.allclose(pa[1], pb[1].cpu(), atol=1e-3)


# ----------------------------------------------------------------------------- benchmark plumbing
def test_benchmark_cli_runs_tiny(tmp_path, cli):
    out = tmp_path / "views.json"
    p = cli("benchmark", "views", "--batch", "2", "--batches", "1", "--warmup", "0", "--tile", "64",
            "--size", "48", "--patch-size", "8", "--processes", "1", "--background-load", "1", "--json", out)
    res = json.loads(out.read_text())
    assert res["background_load"] == 1 and "1 busy background processes" in p.stdout
    assert res["reference_ms_per_sample"] > 0 and res["ours_ms_per_sample"] > 0 and res["batch"] == 2
    assert res["processes"] == 1 and res["ours_processes_ms_per_sample"] > 0
    assert "1 process x 1 torch thread" in p.stdout
    assert abs(res["speedup"] - res["reference_ms_per_sample"] / res["ours_ms_per_sample"]) < 0.1 * res["speedup"] + 0.1
    assert "speed-up" in p.stdout
    bad = cli("benchmark", "views", "--size", "512", check=False)
    assert bad.returncode == 2 and "error: benchmark views: --size 512" in bad.stderr


def test_reference_baseline_finds_matching_centres():
    """The benchmark's baseline does what the reference does: centres with equal source index."""
    import random

    from glcnet.benchmarks.reference_views import get_index, join_transform

    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    index = np.arange(64 * 64, dtype=np.int32).reshape(64, 64)
    img1, img2, lbl1, lbl2 = join_transform(tile, index, 48, rng)
    assert img1.shape == img2.shape == (48, 48, 4) and lbl1.shape == lbl2.shape == (48, 48)
    idx = get_index(lbl1.astype(np.float32), lbl2.astype(np.float32), 8, 4, random.Random(0)).astype(int)
    assert (lbl1[idx[:, 0], idx[:, 1]] == lbl2[idx[:, 2], idx[:, 3]]).all()


def test_keep_freed_memory_can_be_turned_off(monkeypatch):
    from glcnet.utils.memory import keep_freed_memory

    monkeypatch.setenv("GLCNET_ALLOCATOR", "system")
    assert keep_freed_memory() is False
    monkeypatch.setenv("GLCNET_ALLOCATOR", "reuse")
    assert isinstance(keep_freed_memory(), bool)  # True on glibc; other libcs are left alone
