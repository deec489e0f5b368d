"""Batched two-view generation with exact, analytic correspondence (spec "Pretraining views").

Coordinate conventions (all continuous, ``x`` = column, ``y`` = row):

- Source tile ``[H, W]``: pixel ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)``.
- A crop box is ``(x0, y0, x1, y1)`` in source coordinates (sub-pixel, not rounded); its
  size is ``w = x1 - x0``, ``h = y1 - y0``.
- A view of side ``s``: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)`` in view coordinates.
  Before the flips/rotation, view point ``(u, v)`` shows source point
  ``S(u, v) = (x0 + u * w / s, y0 + v * h / s)``; pixel values are bilinear samples at the
  pixel centres (``align_corners=False``, the convention of ``F.interpolate`` and
  ``roi_align(aligned=True)``).
- View 2 is then transformed by ``G = R^k V^vflip H^hflip`` acting on view points:
  ``H: (u, v) -> (s - u, v)``, ``V: (u, v) -> (u, s - v)``,
  ``R: (u, v) -> (v, s - u)`` (one ``torch.rot90(x, 1, dims=(-2, -1))``).

Correspondence: a view-1 point ``p`` shows the same ground as the view-2 point
``q = M p`` with ``M = G S2^-1 S1`` (3x3 homogeneous, per sample; :func:`map_points`).
``M`` only scales, translates, flips and swaps axes, so axis-aligned boxes map to
axis-aligned boxes.

Randomness: every random parameter is drawn on the CPU (small ``[B, k]`` tensors) with the
given CPU ``torch.Generator`` (``None``: torch's global CPU generator), then moved to the
device of the images. One seed therefore gives the same views on CPU and GPU, and no
draw synchronises a GPU stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from glcnet.config import ViewConfig
from glcnet.errors import GlcnetError

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 luma: grayscale and the Y of YIQ
YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@dataclass
class Views:
    """Two views of a batch and the geometry that relates them (conventions: module doc)."""

    view1: Tensor  # [B, C, s, s]  crop of box1, resized; no photometric change
    view2: Tensor  # [B, C, s, s]  crop of box2, resized, hflip, vflip, rot90 k times, photometric
    box1: Tensor  # [B, 4] float (x0, y0, x1, y1) crop of view 1 in source-tile pixels
    box2: Tensor  # [B, 4]
    hflip: Tensor  # [B] bool
    vflip: Tensor  # [B] bool
    rot: Tensor  # [B] int64 k in 0..3, torch.rot90(x, k, dims=(-2, -1)) convention
    size: int  # s

    def _apply(self, fn) -> Views:
        return Views(**{f.name: fn(getattr(self, f.name)) if f.name != "size" else self.size
                        for f in fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Views:
        return self._apply(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Views:
        """Called by ``DataLoader(pin_memory=True)``."""
        return self._apply(lambda t: t.pin_memory())


# ----------------------------------------------------------------------------- geometry
def _affine(a: Tensor, b: Tensor, tx: Tensor, ty: Tensor, c: Tensor | None = None,
            d: Tensor | None = None) -> Tensor:
    """[B, 3, 3] matrices ``[[a, c, tx], [d, b, ty], [0, 0, 1]]``."""
    z = torch.zeros_like(a)
    c = z if c is None else c
    d = z if d is None else d
    return torch.stack([torch.stack([a, c, tx], -1), torch.stack([d, b, ty], -1),
                        torch.stack([z, z, z + 1], -1)], -2)


def box_matrix(box: Tensor, size: int) -> Tensor:
    """``S``: view coords -> source coords, ``(u, v) -> (x0 + u w/s, y0 + v h/s)``; [B, 3, 3]."""
    x0, y0, x1, y1 = box.unbind(-1)
    return _affine((x1 - x0) / size, (y1 - y0) / size, x0, y0)


def flip_rot_matrix(hflip: Tensor, vflip: Tensor, rot: Tensor, size: int,
                    inverse: bool = False) -> Tensor:
    """``G = R^k V^vflip H^hflip`` on view coords of a side-``size`` view (or ``G^-1``); [B, 3, 3]."""
    s = float(size)
    one = torch.ones(hflip.shape, dtype=torch.float32, device=hflip.device)
    zero = torch.zeros_like(one)
    h = _affine(torch.where(hflip, -one, one), one, torch.where(hflip, one * s, zero), zero)
    v = _affine(one, torch.where(vflip, -one, one), zero, torch.where(vflip, one * s, zero))
    r1 = torch.tensor([[0.0, 1, 0], [-1, 0, s], [0, 0, 1]], device=hflip.device)  # (u,v)->(v,s-u)
    powers = torch.stack([torch.linalg.matrix_power(r1, k) for k in range(4)])  # [4, 3, 3]
    if inverse:  # H, V are involutions and commute; R^-k = R^(4-k)
        return h @ v @ powers[(4 - rot.long()) % 4]
    return powers[rot.long()] @ v @ h


def correspondence_matrix(views: Views) -> Tensor:
    """``M = G S2^-1 S1``: view-1 coords -> view-2 coords, [B, 3, 3] float32."""
    s = views.size
    s1 = box_matrix(views.box1.float(), s)
    x0, y0, x1, y1 = views.box2.float().unbind(-1)
    s2inv = _affine(s / (x1 - x0), s / (y1 - y0), -x0 * s / (x1 - x0), -y0 * s / (y1 - y0))
    return flip_rot_matrix(views.hflip, views.vflip, views.rot, s) @ s2inv @ s1


def map_points(views: Views, pts: Tensor) -> Tensor:
    """Map continuous view-1 points ``pts`` [B, N, 2] (x, y) to view-2 points [B, N, 2].

    ``q = G(S2^-1(S1(p)))``: ``S1`` takes view-1 coords to source coords
    (``x0_1 + u w1/s``), ``S2^-1`` takes them to unflipped view-2 coords
    (``(x - x0_2) s/w2``), and ``G`` applies hflip ``u -> s-u``, vflip ``v -> s-v``, then
    ``k`` rotations ``(u, v) -> (v, s-u)`` (module doc). Exact: no rounding.
    """
    m = correspondence_matrix(views).to(pts.dtype)  # [B, 3, 3]
    return pts @ m[:, :2, :2].transpose(1, 2) + m[:, None, :2, 2]


def render(images: Tensor, boxes: Tensor, size: int, hflip: Tensor | None = None,
           vflip: Tensor | None = None, rot: Tensor | None = None,
           mode: str = "bilinear") -> Tensor:
    """Crop ``boxes`` [B, 4] of ``images`` [B, C, H, W], resize to ``size``, flip, rotate.

    One ``grid_sample`` for the whole batch: output pixel centre ``q`` samples the source
    at ``S G^-1 q`` (flips/rotation folded into the sampling grid, never copied), clamped
    to the box's outermost pixel centres, so that pixels outside the box never leak in.
    ``mode="nearest"`` renders index maps exactly (pixel ``floor`` of that point).
    """
    b, _, height, width = images.shape
    if hflip is None:
        hflip = vflip = torch.zeros(b, dtype=torch.bool, device=boxes.device)
        rot = torch.zeros(b, dtype=torch.long, device=boxes.device)
    norm_src = torch.tensor([[2.0 / width, 0, -1], [0, 2.0 / height, -1], [0, 0, 1]],
                            device=boxes.device)
    # normalised output coords (xn, yn) in [-1, 1] -> view pixel coords ((xn + 1) s / 2)
    denorm = torch.tensor([[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1.0]],
                          device=boxes.device)
    ginv = flip_rot_matrix(hflip, vflip, rot, size, inverse=True)
    theta = (norm_src @ box_matrix(boxes.float(), size) @ ginv @ denorm)[:, :2]  # [B, 2, 3]
    theta = theta.to(images.device, images.dtype)
    lin = (torch.arange(size, device=images.device, dtype=images.dtype) * 2 + 1) / size - 1
    # grid[b, i, j] = theta[b] @ (lin[j], lin[i], 1): one broadcast add of [B,1,s,2] + [B,s,1,2]
    cols = theta[:, None, None, :, 0] * lin[None, None, :, None] + theta[:, None, None, :, 2]
    grid = cols + theta[:, None, None, :, 1] * lin[None, :, None, None]  # [B, s, s, 2]
    # the crop is resampled on its own (as F.interpolate of the sliced crop, the uint8 path):
    # sample points clamp to the box's outermost pixel centres [x0 + 1/2, x1 - 1/2]
    b4 = boxes.float().to(images.device)
    scale = torch.tensor([2.0 / width, 2.0 / height], device=images.device)
    lo = ((b4[:, :2] + 0.5) * scale - 1).to(images.dtype)[:, None, None]  # [B, 1, 1, 2]
    hi = torch.maximum(((b4[:, 2:] - 0.5) * scale - 1).to(images.dtype)[:, None, None], lo)
    grid = torch.minimum(torch.maximum(grid, lo), hi)
    return F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)


def random_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                 ratio: tuple[float, float], generator: torch.Generator | None = None,
                 attempts: int = 10) -> Tensor:
    """RandomResizedCrop boxes [n, 4] (CPU float32, integer-valued), torchvision's rule, vectorised.

    Up to ``attempts`` tries per box: area ``A ~ U(scale) H W``, ratio ``r = exp(U(log ratio))``,
    ``w = round(sqrt(A r))``, ``h = round(sqrt(A / r))``; the first try with ``1 <= w <= W``,
    ``1 <= h <= H`` is placed uniformly on the integer grid; if none fits, the central crop of
    the ratio-clamped whole tile. Integer boxes let the uint8 path crop by slicing
    (:mod:`glcnet.data.views_uint8`); the correspondence maths does not need them.
    """
    area = torch.empty(n, attempts).uniform_(*scale, generator=generator) * (height * width)
    logr = torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                             generator=generator)
    w, h = (area * logr.exp()).sqrt().round(), (area / logr.exp()).sqrt().round()  # [n, attempts]
    ok = (w >= 1) & (h >= 1) & (w <= width) & (h <= height)
    first = ok.int().argmax(1, keepdim=True)  # first fitting attempt
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    # fallback: whole tile, clamped to the ratio range, centred
    fw = max(1.0, round(min(float(width), height * ratio[1])))
    fh = max(1.0, round(min(float(height), width / ratio[0])))
    found = ok.any(1)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    pos = torch.rand(n, 2, generator=generator)
    x0 = torch.where(found, (pos[:, 0] * (width - w + 1)).floor().clamp(max=width - w), ((width - w) / 2).floor())
    y0 = torch.where(found, (pos[:, 1] * (height - h + 1)).floor().clamp(max=height - h), ((height - h) / 2).floor())
    return torch.stack([x0, y0, x0 + w, y0 + h], 1)


# ----------------------------------------------------------------------------- patches
def sample_patches(views: Views, patch_num: int, patch_size: float,
                   generator: torch.Generator | None = None, *,
                   min_size: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pick ``patch_num`` non-overlapping square patches in the overlap of the two views.

    Returns ``boxes1`` [B, P, 4] (squares in view-1 coords), ``boxes2`` [B, P, 4]
    (``M boxes1``: the same ground in view-2 coords; a square only when both crops have
    the same aspect ratio, otherwise a rectangle) and ``valid`` [B, P] bool. Invalid
    entries have all-zero boxes.

    Per sample: the overlap ``box1 n box2`` in view-1 coords is a ``Wo x Ho`` rectangle;
    the side is ``min(patch_size, Wo, Ho)`` (smaller patches when the overlap is thin);
    it is cut into the ``nx x ny`` grid of cells with ``nx ny >= P`` and the largest
    shorter cell side (fewer cells if no grid of ``P`` fits; fewer patches then), ``P``
    random cells are chosen and each patch is placed uniformly inside its cell, so
    patches never overlap. A side below ``min_size`` (default ``patch_size / 2``) makes
    all patches of that sample invalid. Vectorised over the batch, no retry loops.
    """
    if patch_num < 1 or patch_size <= 0:
        raise GlcnetError(f"patches: need patch_num >= 1 and patch_size > 0, got {patch_num}, {patch_size}")
    min_size = patch_size / 2 if min_size is None else min_size
    s, p, dev = views.size, patch_num, views.box1.device
    b = views.box1.shape[0]
    b1, b2 = views.box1.float(), views.box2.float()
    scale = torch.stack([b1[:, 2] - b1[:, 0], b1[:, 3] - b1[:, 1]], 1) / s  # [B, 2] source px per view px
    lo = (torch.maximum(b1[:, :2], b2[:, :2]) - b1[:, :2]) / scale  # [B, 2] overlap in view-1 coords
    hi = (torch.minimum(b1[:, 2:], b2[:, 2:]) - b1[:, :2]) / scale
    ext = (hi - lo).clamp(min=0)  # [B, 2] (Wo, Ho)
    side = torch.minimum(ext.min(1).values, torch.tensor(float(patch_size), device=dev))  # [B]
    ok = side >= max(min_size, 1e-6)
    nmax = torch.where(ok[:, None], (ext / side.clamp(min=1e-6)[:, None]).floor(), 0).clamp(max=p)  # [B, 2]

    # candidate grids nx = 1..P, ny = ceil(P / nx); keep the feasible one with the largest cell
    nx = torch.arange(1, p + 1, device=dev, dtype=torch.float32)  # [P]
    ny = torch.ceil(p / nx)
    feasible = (nx <= nmax[:, :1]) & (ny <= nmax[:, 1:])  # [B, P]
    cell = torch.minimum(ext[:, :1] / nx, ext[:, 1:] / ny)  # [B, P] shorter cell side
    best = torch.where(feasible, cell, -1.0).argmax(1)  # [B]
    has = feasible.any(1)
    gx = torch.where(has, nx[best], nmax[:, 0])  # [B]; no feasible grid: all nmax cells
    gy = torch.where(has, ny[best], nmax[:, 1])
    count = torch.minimum(gx * gy, torch.tensor(float(p), device=dev))

    keys = torch.rand(b, 2 * p, generator=generator).to(dev)  # random cell order
    rnd = torch.rand(b, p, 2, generator=generator).to(dev)  # position inside the cell
    ids = torch.arange(2 * p, device=dev, dtype=torch.float32)
    keys = torch.where(ids < gx[:, None] * gy[:, None], keys, 2.0)
    cid = keys.argsort(1)[:, :p].float()  # [B, P] chosen cells
    cx, cy = cid % gx.clamp(min=1)[:, None], (cid / gx.clamp(min=1)[:, None]).floor()
    cw = ext / torch.stack([gx, gy], 1).clamp(min=1)  # [B, 2] cell size
    xy = torch.stack([cx, cy], -1) * cw[:, None] + rnd * (cw - side[:, None])[:, None]  # [B, P, 2]
    xy = lo[:, None] + xy
    valid = (torch.arange(p, device=dev)[None] < count[:, None]) & ok[:, None]  # [B, P]

    boxes1 = torch.cat([xy, xy + side[:, None, None]], -1)  # [B, P, 4]
    corners = map_points(views, boxes1.reshape(b, 2 * p, 2)).reshape(b, p, 2, 2)
    boxes2 = torch.cat([corners.amin(2), corners.amax(2)], -1).clamp(0, s)  # flips reorder corners
    zero = torch.zeros((), device=dev)
    return (torch.where(valid[..., None], boxes1, zero), torch.where(valid[..., None], boxes2, zero),
            valid)


# ----------------------------------------------------------------------------- photometric
def color_matrices(channels: int, rgb: tuple[int, int, int] | None, jitter: Tensor, gray: Tensor,
                   bright: Tensor, contrast: Tensor, sat: Tensor, hue: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample affine colour map ``x -> A x + K m`` (``m``: band means), A, K [B, C, C].

    Composition, for jittered samples: per-band brightness ``x -> b x``; per-band contrast
    around the band mean ``x -> c (x - b m) + b m``; on the RGB bands, HSV-style jitter
    linearised in YIQ space as NVIDIA DALI's ``hsv`` and TF-Addons' ``adjust_hsv_in_yiq``
    do: rotate the chroma plane (I, Q) by ``2 pi dh`` (hue) and scale it by ``sat``
    (saturation); then, for gray samples, R = G = B = luma. Non-selected steps are exact
    identities. The caller clamps to [0, 1] once at the end.
    """
    b = jitter.shape[0]
    eye = torch.eye(channels, dtype=torch.float64).expand(b, channels, channels)
    bright = torch.where(jitter[:, None], bright, 1.0).double()
    contrast = torch.where(jitter[:, None], contrast, 1.0).double()
    a = torch.diag_embed(contrast * bright)  # D_c D_b
    k = torch.diag_embed((1 - contrast) * bright)  # (I - D_c) D_b
    if rgb is not None:
        idx = torch.tensor(rgb)
        t = torch.tensor(YIQ, dtype=torch.float64)
        cos, sin = torch.cos(2 * math.pi * hue.double()), torch.sin(2 * math.pi * hue.double())
        one, zero = torch.ones_like(cos), torch.zeros_like(cos)
        rot = torch.stack([torch.stack([one, zero, zero], -1),
                           torch.stack([zero, cos, -sin], -1),
                           torch.stack([zero, sin, cos], -1)], -2)  # [B, 3, 3]
        hs = torch.linalg.inv(t) @ rot @ torch.diag_embed(torch.stack([one, sat.double(), sat.double()], -1)) @ t
        chroma = eye.clone()
        chroma[:, idx[:, None], idx[None, :]] = torch.where(jitter[:, None, None], hs, torch.eye(3, dtype=torch.float64))
        g = eye.clone()
        g[:, idx[:, None], idx[None, :]] = torch.where(
            gray[:, None, None], torch.tensor(LUMA, dtype=torch.float64).expand(3, 3), torch.eye(3, dtype=torch.float64))
        a, k = g @ chroma @ a, g @ chroma @ k
    return a.float(), k.float()


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int | None = None, out: Tensor | None = None) -> Tensor:
    """Blur each image of ``x`` [n, C, h, w] with its own ``sigma`` [n] (separable, reflect).

    Kernel ``exp(-t^2 / (2 sigma^2))`` for ``|t| <= radius`` (default ``ceil(3 max sigma)``),
    normalised; each axis is ``sum_t k_t x_shifted(t)``, one fused multiply-add over the
    whole batch per tap: few kernel launches on a GPU, each sample its own sigma (on the CPU
    :func:`blur_planes` does one image faster). ``out`` may be ``x`` itself (in-place blur).
    """
    n, c, h, w = x.shape
    r = math.ceil(3 * float(sigma.max())) if radius is None else radius
    r = max(1, min(r, h - 1, w - 1))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t[None] ** 2 / (2 * sigma[:, None].float() ** 2))  # [n, 2r+1]
    k = (k / k.sum(1, keepdim=True)).to(x)[:, :, None, None, None]  # [n, 2r+1, 1, 1, 1]
    xp = F.pad(x, (0, 0, r, r), mode="reflect")  # [n, C, h + 2r, w]
    y = xp[:, :, :h] * k[:, 0]
    for j in range(1, 2 * r + 1):
        y.addcmul_(xp[:, :, j:j + h], k[:, j])
    yp = F.pad(y, (r, r, 0, 0), mode="reflect")  # [n, C, h, w + 2r]
    out = torch.mul(yp[..., :w], k[:, 0], out=out)
    for j in range(1, 2 * r + 1):
        out.addcmul_(yp[..., j:j + w], k[:, j])
    return out


def blur_planes(x: Tensor, sigma: float, radius: int) -> Tensor:
    """:func:`gaussian_blur` of one image ``x`` [C, h, w] (contiguous) on the CPU, as two
    depthwise convolutions; a new [C, h, w] tensor.

    Rows along ``w``: the ``C h`` rows are the channels of a ``[1, C h, 1, w + 2r]`` image.
    Columns along ``h``: the planar memory ``[C, h + 2r, w]`` is read as a channels-last
    ``[C, w, h + 2r, 1]`` batch, ``w`` channels wide, which oneDNN's depthwise kernel
    vectorises. Reflect padding as :func:`gaussian_blur`, whose one memory pass per tap
    this replaces on the CPU: measured on 2 cores, 1.2x (radius 3) to 1.7x (radius 6)
    faster, as fast at radius 2, 1.4x slower at radius 1 (two convolutions' fixed cost).
    """
    c, h, w = x.shape
    r = max(1, min(radius, h - 1, w - 1))
    k = [math.exp(-t * t / (2 * float(sigma) ** 2)) for t in range(-r, r + 1)]
    k = torch.tensor(k, dtype=x.dtype) / sum(k)  # (Python maths: cheaper than tensor ops at this size)
    xp = F.pad(x, (r, r, 0, 0), mode="reflect").view(1, c * h, 1, w + 2 * r)
    y = F.conv2d(xp, k.view(1, 1, 1, -1).expand(c * h, 1, 1, -1), groups=c * h)  # [1, C h, 1, w]
    yp = F.pad(y.view(c, h, w), (0, 0, r, r), mode="reflect")  # [C, h + 2r, w]
    z = F.conv2d(yp.view(c, h + 2 * r, 1, w).permute(0, 3, 1, 2),  # [C, w, h + 2r, 1] channels-last
                 k.view(1, 1, -1, 1).expand(w, 1, -1, 1), groups=w)  # [C, w, h, 1], memory [C, h, w]
    return z.permute(0, 2, 3, 1).reshape(c, h, w)


def color_map(x: Tensor, a: Tensor, k: Tensor, scale: float = 1.0) -> None:
    """In place on ``x`` [n, C, s, s] (contiguous): ``x <- clamp(scale (A x + K mean(x)), 0, 1)``
    per sample, with ``A, K`` [n, C, C] from :func:`color_matrices` and ``mean`` over space."""
    n, c, h, w = x.shape
    a, k = (a * scale).to(x.device, x.dtype), (k * scale).to(x.device, x.dtype)
    flat = x.view(n, c, h * w)
    torch.clamp(torch.baddbmm(k @ flat.mean(2, keepdim=True), a, flat), 0, 1, out=flat)


def blur_samples(x: Tensor, blur: Tensor, sigma: Tensor, radius: Tensor) -> None:
    """In place: :func:`gaussian_blur` of the samples of ``x`` where ``blur`` [n] (CPU bool),
    each with its ``sigma`` and kernel ``radius`` [n]. On the CPU one sample at a time with
    :func:`blur_planes` (in cache); on a GPU one call per distinct radius (few kernel launches)."""
    if x.device.type == "cpu":
        for i in blur.nonzero()[:, 0].tolist():
            x[i] = blur_planes(x[i], float(sigma[i]), int(radius[i]))
        return
    for r in radius[blur].unique().tolist():
        idx = (blur & (radius == r)).nonzero()[:, 0]
        i = idx.to(x.device)
        x.index_copy_(0, i, gaussian_blur(x[i], sigma[idx], r))


# ----------------------------------------------------------------------------- generator
def _check_config(cfg: ViewConfig) -> None:
    def bad(name: str, want: str) -> GlcnetError:
        return GlcnetError(f"views.{name}: expected {want}, got {getattr(cfg, name)!r}")

    if cfg.size < 1:
        raise bad("size", "a positive integer")
    if not 0 < cfg.scale[0] <= cfg.scale[1] <= 1:
        raise bad("scale", "0 < min <= max <= 1")
    if not 0 < cfg.ratio[0] <= cfg.ratio[1]:
        raise bad("ratio", "0 < min <= max")
    for name in ("p_flip", "p_rot", "p_jitter", "p_gray", "p_blur"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise bad(name, "a probability in [0, 1]")
    for name in ("brightness", "contrast", "saturation"):
        if getattr(cfg, name) < 0:
            raise bad(name, "a value >= 0")
    if not 0 <= cfg.hue <= 0.5:
        raise bad("hue", "a value in [0, 0.5]")
    if not 0 < cfg.blur_sigma[0] <= cfg.blur_sigma[1]:
        raise bad("blur_sigma", "0 < min <= max")
    if cfg.cpu_chunk < 0:
        raise bad("cpu_chunk", "0 (whole batch) or a positive sample count")
    if cfg.rgb_bands is not None and (len(set(cfg.rgb_bands)) != 3 or min(cfg.rgb_bands) < 0):
        raise bad("rgb_bands", "three distinct band indices or null")


class ViewGenerator:
    """Two augmented views of every tile of a batch, plus their geometry (:class:`Views`).

    View 1: RandomResizedCrop (``cfg.scale``, ``cfg.ratio``) resized to ``cfg.size``.
    View 2: an independent RandomResizedCrop, then hflip and vflip (each ``p_flip``), then
    ``torch.rot90`` by ``k ~ U{1,2,3}`` (with ``p_rot``, else 0), then colour jitter
    (``p_jitter``: per-band brightness/contrast on every band, hue/saturation on
    ``rgb_bands``), grayscale of the RGB bands (``p_gray``) and Gaussian blur
    (``p_blur``, sigma ~ U(blur_sigma) in view pixels); values stay in [0, 1].

    Input: float tiles scaled to [0, 1], or uint8 tiles meaning ``value / 255`` (8-bit data;
    a quarter of the bytes to load and transfer). Works for any band count and on the
    device of ``images``: float tiles (and uint8 on a GPU) go through one batched
    ``grid_sample``; uint8 tiles on the CPU go through :mod:`glcnet.data.views_uint8`
    (several times faster there; same parameters, values within the uint8 rounding).
    Stateless, picklable (usable in DataLoader workers, see :class:`ViewCollate`). Float
    tiles on one CPU thread are rendered in sub-batches of ``cfg.cpu_chunk`` samples so
    intermediates stay in cache; parameters are drawn for the whole batch first, so the
    result does not depend on the chunking.
    """

    def __init__(self, cfg: ViewConfig):
        _check_config(cfg)
        self.cfg = cfg

    @torch.no_grad()
    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Views:
        cfg, g = self.cfg, generator
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[0] == 0 \
                or not (images.is_floating_point() or images.dtype == torch.uint8):
            what = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
            raise GlcnetError("views: expected a batch [B, C, H, W] of float tiles scaled to [0, 1] "
                              f"or uint8 tiles, got {what}")
        if g is not None and g.device.type != "cpu":
            raise GlcnetError("views: generator must be a CPU torch.Generator (parameters are drawn on the CPU)")
        b, c, height, width = images.shape
        if cfg.rgb_bands is not None and max(cfg.rgb_bands) >= c:
            raise GlcnetError(f"views.rgb_bands {tuple(cfg.rgb_bands)}: images have only {c} bands "
                              "(set views.rgb_bands=null for non-RGB data)")
        p = self._draw(b, c, height, width, g)
        dev = images.device
        if images.dtype == torch.uint8 and dev.type == "cpu":
            from glcnet.data.views_uint8 import render_uint8

            view1, view2 = render_uint8(images, p, cfg.size)
        else:
            if images.dtype == torch.uint8:
                images = images.float().mul_(1 / 255)
            # one CPU thread (e.g. DataLoader workers): cache-sized sub-batches; several threads or
            # GPU: the whole batch (fewer, larger parallel ops). Same result for any chunk size.
            single = dev.type == "cpu" and torch.get_num_threads() == 1
            step = cfg.cpu_chunk if single and cfg.cpu_chunk > 0 else b
            parts = [self._render(images[i:i + step], p, slice(i, i + step)) for i in range(0, b, step)]
            view1, view2 = (parts[0] if len(parts) == 1 else
                            (torch.cat([v for v, _ in parts]), torch.cat([v for _, v in parts])))
        return Views(view1, view2, p["box1"].to(dev), p["box2"].to(dev), p["hflip"].to(dev),
                     p["vflip"].to(dev), p["rot"].to(dev), cfg.size)

    def _draw(self, b: int, c: int, height: int, width: int, g: torch.Generator | None) -> dict[str, Tensor]:
        """All random parameters of a batch, on the CPU; every draw happens, selected or not."""
        cfg = self.cfg
        boxes = random_boxes(2 * b, height, width, cfg.scale, cfg.ratio, g)  # [2B, 4]
        u = torch.rand(b, 7, generator=g)  # coins: hflip vflip rot jitter gray blur, blur sigma
        rot = torch.where(u[:, 2] < cfg.p_rot, torch.randint(1, 4, (b,), generator=g), 0)
        f = torch.rand(b, 2 * c + 2, generator=g) * 2 - 1  # [-1, 1]: brightness, contrast, sat, hue
        jitter = u[:, 3] < cfg.p_jitter
        gray = (u[:, 4] < cfg.p_gray) & (cfg.rgb_bands is not None)
        a, k = color_matrices(c, cfg.rgb_bands, jitter, gray, (1 + f[:, :c] * cfg.brightness).clamp(min=0),
                              (1 + f[:, c:2 * c] * cfg.contrast).clamp(min=0),
                              (1 + f[:, -2] * cfg.saturation).clamp(min=0), f[:, -1] * cfg.hue)
        sigma = cfg.blur_sigma[0] + u[:, 6] * (cfg.blur_sigma[1] - cfg.blur_sigma[0])
        return {"box1": boxes[:b], "box2": boxes[b:], "hflip": u[:, 0] < cfg.p_flip,
                "vflip": u[:, 1] < cfg.p_flip, "rot": rot, "color": jitter | gray, "a": a, "k": k,
                "blur": u[:, 5] < cfg.p_blur, "sigma": sigma,
                "radius": (3 * sigma).ceil().clamp(min=1).long()}  # blur kernel: |t| <= ceil(3 sigma)

    def _render(self, images: Tensor, p: dict[str, Tensor], sl: slice) -> tuple[Tensor, Tensor]:
        """Float path: view 1 and view 2 of the samples ``sl`` (``images`` is that slice)."""
        s = self.cfg.size
        view1 = render(images, p["box1"][sl], s)  # [b, C, s, s]
        view2 = render(images, p["box2"][sl], s, p["hflip"][sl], p["vflip"][sl], p["rot"][sl])
        if bool(p["color"][sl].any()):
            color_map(view2, p["a"][sl], p["k"][sl])
        blur_samples(view2, p["blur"][sl], p["sigma"][sl], p["radius"][sl])
        return view1, view2


class ViewCollate:
    """``collate_fn`` for a DataLoader of ``{"image": [C, H, W]}`` samples: returns :class:`Views`.

    Runs in the worker processes on the CPU with torch's global generator (seeded per
    worker by the DataLoader, so ``torch.manual_seed`` in the main process fixes the views).
    """

    def __init__(self, cfg: ViewConfig):
        self.generator = ViewGenerator(cfg)

    def __call__(self, samples: list[dict[str, Tensor]]) -> Views:
        return self.generator(torch.stack([x["image"] for x in samples]))
