"""GLCNet's matched patches: non-overlapping squares in the overlap of two views.

The local matching contrast (:mod:`glcnet.ssl.glcnet`) compares decoder features of the
same ground in both views; the boxes come from the views' exact geometry
(:func:`glcnet.transforms.map_points`), never from a search over index maps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glcnet.errors import GlcnetError
from glcnet.transforms import Views, map_points


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
    all patches of that sample invalid. Vectorised over the batch, no retry loops; the
    random draws are made on the CPU ``generator`` (as the views' parameters).
    """
    if patch_num < 1 or patch_size <= 0:
        raise GlcnetError(f"patches: need patch_num >= 1 and patch_size > 0, got {patch_num}, {patch_size}")
    with torch.autocast(views.box1.device.type, enabled=False):  # bf16 would move the boxes by pixels
        return _sample_patches(views, patch_num, patch_size, generator, min_size)


def _sample_patches(views: Views, patch_num: int, patch_size: float, generator: torch.Generator | None,
                    min_size: float | None) -> tuple[Tensor, Tensor, Tensor]:
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
