"""The random parameters of a batch of two views, and the interface of the renderers.

:func:`draw_params` draws everything on the CPU (small ``[B, k]`` tensors) with the given
CPU ``torch.Generator`` (``None``: torch's global CPU generator); every draw happens,
selected or not, so one seed gives the same views on any device and with any renderer.
A renderer (:data:`Renderer`) turns tiles and these parameters into the two views:
:func:`~glcnet.transforms.render_torch.render_torch` (any dtype, any device, batched
``grid_sample``) or :func:`~glcnet.transforms.render_uint8.render_uint8` (uint8 tiles on
the CPU, per sample).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

import torch
from torch import Tensor

from glcnet.config import ViewConfig
from glcnet.transforms.geometry import random_boxes
from glcnet.transforms.photometric import color_matrices
from glcnet.transforms.presets import Strength


class ViewParams(TypedDict):
    """Per-sample parameters of a batch of ``B`` samples with ``C`` bands (CPU tensors)."""

    box1: Tensor  # [B, 4] integer-valued float crop box of view 1 (x0, y0, x1, y1)
    box2: Tensor  # [B, 4] crop box of view 2
    hflip: Tensor  # [B] bool
    vflip: Tensor  # [B] bool
    rot: Tensor  # [B] int64 k of torch.rot90
    color: Tensor  # [B] bool: view 2 gets its colour map
    a: Tensor  # [B, C, C] colour map x -> A x + K m (photometric.color_matrices)
    k: Tensor  # [B, C, C]
    blur: Tensor  # [B] bool: view 2 is blurred
    sigma: Tensor  # [B] blur sigma in view pixels
    radius: Tensor  # [B] int64 blur kernel radius ceil(3 sigma) (>= 1)


# (tiles [B, C, H, W], parameters, view side s) -> (view 1, view 2), float [B, C, s, s] in [0, 1]
Renderer = Callable[[Tensor, ViewParams, int], tuple[Tensor, Tensor]]


def draw_params(view: ViewConfig, cfg: Strength, b: int, c: int, height: int, width: int,
                g: torch.Generator | None) -> ViewParams:
    """All random parameters of a batch of ``b`` tiles ``[c, height, width]``, on the CPU: crops
    of ``view``, view 2's augmentations of strength ``cfg`` (:func:`glcnet.transforms.presets.resolve`)."""
    boxes = random_boxes(2 * b, height, width, view.scale, view.ratio, g)  # [2B, 4]
    u = torch.rand(b, 7, generator=g)  # coins: hflip vflip rot jitter gray blur, blur sigma
    rot = torch.where(u[:, 2] < cfg.p_rot, torch.randint(1, 4, (b,), generator=g), 0)
    f = torch.rand(b, 2 * c + 2, generator=g) * 2 - 1  # [-1, 1]: brightness, contrast, sat, hue
    bright, contrast = f[:, :c], f[:, c:2 * c]  # per band; else the first band's factor for all of them
    if not cfg.per_band:
        bright, contrast = bright[:, :1].expand(b, c), contrast[:, :1].expand(b, c)
    jitter = u[:, 3] < cfg.p_jitter
    gray = (u[:, 4] < cfg.p_gray) & (view.rgb_bands is not None)
    a, k = color_matrices(c, view.rgb_bands, jitter, gray, (1 + bright * cfg.brightness).clamp(min=0),
                          (1 + contrast * cfg.contrast).clamp(min=0),
                          (1 + f[:, -2] * cfg.saturation).clamp(min=0), f[:, -1] * cfg.hue)
    sigma = cfg.blur_sigma[0] + u[:, 6] * (cfg.blur_sigma[1] - cfg.blur_sigma[0])
    return {"box1": boxes[:b], "box2": boxes[b:], "hflip": u[:, 0] < cfg.p_flip,
            "vflip": u[:, 1] < cfg.p_flip, "rot": rot, "color": jitter | gray, "a": a, "k": k,
            "blur": u[:, 5] < cfg.p_blur, "sigma": sigma,
            "radius": (3 * sigma).ceil().clamp(min=1).long()}  # blur kernel: |t| <= ceil(3 sigma)
