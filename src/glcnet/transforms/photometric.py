"""Photometric kernels of view 2: per-sample colour maps and Gaussian blur.

Both renderers (:mod:`glcnet.transforms.render_torch`, :mod:`glcnet.transforms.render_uint8`)
use these with the parameters drawn by :class:`~glcnet.transforms.views.ViewGenerator`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 luma: grayscale and the Y of YIQ
YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


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
        eye3 = torch.eye(3, dtype=torch.float64)
        chroma[:, idx[:, None], idx[None, :]] = torch.where(jitter[:, None, None], hs, eye3)
        g = eye.clone()
        g[:, idx[:, None], idx[None, :]] = torch.where(
            gray[:, None, None], torch.tensor(LUMA, dtype=torch.float64).expand(3, 3), eye3)
        a, k = g @ chroma @ a, g @ chroma @ k
    return a.float(), k.float()


def color_map(x: Tensor, a: Tensor, k: Tensor, scale: float = 1.0) -> None:
    """In place on ``x`` [n, C, s, s] (contiguous): ``x <- clamp(scale (A x + K mean(x)), 0, 1)``
    per sample, with ``A, K`` [n, C, C] from :func:`color_matrices` and ``mean`` over space."""
    n, c, h, w = x.shape
    a, k = (a * scale).to(x.device, x.dtype), (k * scale).to(x.device, x.dtype)
    flat = x.view(n, c, h * w)
    torch.clamp(torch.baddbmm(k @ flat.mean(2, keepdim=True), a, flat), 0, 1, out=flat)


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
    taps = [math.exp(-t * t / (2 * float(sigma) ** 2)) for t in range(-r, r + 1)]
    k = torch.tensor(taps, dtype=x.dtype) / sum(taps)  # (Python maths: cheaper than tensor ops at this size)
    xp = F.pad(x, (r, r, 0, 0), mode="reflect").view(1, c * h, 1, w + 2 * r)
    y = F.conv2d(xp, k.view(1, 1, 1, -1).expand(c * h, 1, 1, -1), groups=c * h)  # [1, C h, 1, w]
    yp = F.pad(y.view(c, h, w), (0, 0, r, r), mode="reflect")  # [C, h + 2r, w]
    z = F.conv2d(yp.view(c, h + 2 * r, 1, w).permute(0, 3, 1, 2),  # [C, w, h + 2r, 1] channels-last
                 k.view(1, 1, -1, 1).expand(w, 1, -1, 1), groups=w)  # [C, w, h, 1], memory [C, h, w]
    return z.permute(0, 2, 3, 1).reshape(c, h, w)


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
