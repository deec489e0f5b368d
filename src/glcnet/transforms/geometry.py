"""Geometry of two views: crop boxes, flips and rotations, and the exact correspondence.

Coordinate conventions (all continuous, ``x`` = column, ``y`` = row):

- Source tile ``[H, W]``: pixel ``(row i, col j)`` covers ``[j, j+1) x [i, i+1)``.
- A crop box is ``(x0, y0, x1, y1)`` in source coordinates (:func:`random_boxes` draws
  integer ones; the maths here takes any real box); its size is ``w = x1 - x0``,
  ``h = y1 - y0``.
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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor


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

    def _apply(self, fn: Callable[[Tensor], Tensor]) -> Views:
        moved: dict[str, Any] = {f.name: fn(getattr(self, f.name)) for f in fields(self) if f.name != "size"}
        return Views(**moved, size=self.size)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Views:
        """The same views on ``device`` (Lightning moves a batch with this)."""
        return self._apply(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Views:
        """Called by ``DataLoader(pin_memory=True)``."""
        return self._apply(lambda t: t.pin_memory())


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


def flip_rot_dims(hflip: bool, vflip: bool, rot: int) -> tuple[tuple[int, ...], bool]:
    """``G = R^k V^vflip H^hflip`` on an image as (dims to flip, then transpose?).

    ``torch.rot90(x, k, dims=(-2, -1))`` is ``x.flip(-1).mT`` (k=1), ``x.flip(-2, -1)`` (k=2),
    ``x.flip(-2).mT`` (k=3); flips commute, so the whole map is one flip and an optional
    transpose: width flipped iff ``hflip xor k in {1, 2}``, height iff ``vflip xor k in {2, 3}``.
    """
    k = rot % 4
    dims = tuple(d for d, on in ((-2, vflip != (k in (2, 3))), (-1, hflip != (k in (1, 2)))) if on)
    return dims, k % 2 == 1


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


def random_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                 ratio: tuple[float, float], generator: torch.Generator | None = None,
                 attempts: int = 10) -> Tensor:
    """RandomResizedCrop boxes [n, 4] (CPU float32, integer-valued), torchvision's rule, vectorised.

    Up to ``attempts`` tries per box: area ``A ~ U(scale) H W``, ratio ``r = exp(U(log ratio))``,
    ``w = round(sqrt(A r))``, ``h = round(sqrt(A / r))``; the first try with ``1 <= w <= W``,
    ``1 <= h <= H`` is placed uniformly on the integer grid; if none fits, the central crop of
    the ratio-clamped whole tile. Integer boxes let the uint8 renderer crop by slicing
    (:mod:`glcnet.transforms.render_uint8`); the correspondence maths does not need them.
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
