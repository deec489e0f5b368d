"""Renderer of both views of a batch of uint8 tiles on the CPU (the fast backend there).

Same parameters, geometry and photometric maths as :mod:`glcnet.transforms.render_torch`
(conventions: :mod:`glcnet.transforms.geometry`); only the resampling kernel differs. One sample at
a time (its data stays in the CPU cache); the torch thread budget is spent across samples,
each thread on one intra-op thread, so that a busy machine cannot stall it
(:mod:`glcnet.utils.threads`):

1. resize both crops: the integer crop box through ``F.interpolate(mode="bilinear",
   align_corners=False)`` on uint8 channels-last data, torch's SIMD kernel (3 or 4 bands;
   other counts in zero-padded groups of 4). Its output is the bilinear sample at the same
   points as ``grid_sample`` on the float tile, rounded to uint8 (tested: at most 1/255 apart).
2. view 1: one uint8 -> planar float copy, then / 255.
3. view 2: its flips and rotation ``G`` are one ``flip`` of the uint8 view and an optional
   transpose, applied last (the colour map and the blur commute with it); the colour
   ``x -> clamp(A x / 255 + K m / 255, 0, 1)`` (``m``: band means) is one matrix product
   ``[C, G c'] @ [G c', s*s]`` of the pixels, which also makes the bands planar; then the
   blur of the selected samples (:func:`~glcnet.transforms.photometric.blur_planes`).

Why: on 2 CPU cores this is several times faster than the batched float ``grid_sample``
(``glcnet benchmark views``), which matters where views are made on the CPU, i.e. in
DataLoader workers feeding a GPU (:class:`~glcnet.transforms.views.ViewCollate`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from glcnet.errors import GlcnetError
from glcnet.transforms.geometry import flip_rot_dims
from glcnet.transforms.params import ViewParams
from glcnet.transforms.photometric import blur_planes
from glcnet.utils.threads import for_each_sample


def band_groups(images: Tensor) -> Tensor:
    """uint8 ``[B, C, H, W]`` (any memory format) -> ``[B, G, H, W, c']`` contiguous.

    ``c' = C`` (``G = 1``) for 3 or 4 bands, the counts torch's SIMD kernel takes; otherwise
    bands are zero-padded to ``G = ceil(C / 4)`` groups of ``c' = 4``. ``out[b].permute(0, 3, 1, 2)``
    is then a channels-last ``[G, c', H, W]`` batch for ``F.interpolate``.
    """
    b, c, h, w = images.shape
    nhwc = images.permute(0, 2, 3, 1)  # a view; free when the tiles came as [B, H, W, C]
    if c in (3, 4):
        return nhwc.contiguous()[:, None]
    g = -(-c // 4)
    padded = images.new_zeros(b, h, w, 4 * g)
    padded[..., :c] = nhwc
    return padded.view(b, h, w, g, 4).permute(0, 3, 1, 2, 4).contiguous()


def _band_sums(bands: Tensor) -> Tensor:
    """Row sums of ``bands`` [K, N] float, contiguous or the transpose of a contiguous
    [N, K] (whose ``sum(0)`` vectorises badly for small K: reduced over wide rows instead)."""
    k, n = bands.shape
    if bands.stride(1) == 1:
        return bands.sum(1)
    rows = 16 if n % 16 == 0 else 1
    return bands.T.reshape(n // rows, rows * k).sum(0).view(rows, k).sum(0)


def _resize(src: Tensor, box: list[int], size: int) -> Tensor:
    """Crop ``box`` (x0, y0, x1, y1) of channels-last uint8 ``src`` [G, c', H, W] resized to
    ``[G, c', size, size]`` (channels-last)."""
    x0, y0, x1, y1 = box
    return F.interpolate(src[..., y0:y1, x0:x1], size=(size, size), mode="bilinear", align_corners=False)


def render_uint8(images: Tensor, params: ViewParams, size: int, workers: int | None = None) -> tuple[Tensor, Tensor]:
    """View 1 and view 2 (float ``[B, C, size, size]`` in [0, 1]) of uint8 ``images`` on the CPU.

    ``params`` as drawn by :func:`~glcnet.transforms.params.draw_params` (integer crop boxes).
    The samples are shared by ``workers`` threads (default ``torch.get_num_threads()``), each
    on one torch intra-op thread (:func:`~glcnet.utils.threads.for_each_sample`); the result
    does not depend on their number.
    """
    b, c = images.shape[:2]
    both = torch.cat([params["box1"], params["box2"]], 1)  # [B, 8]
    if not torch.equal(both, both.round()):
        raise GlcnetError("views: the uint8 path needs integer crop boxes")
    boxes = both.long().tolist()
    groups = band_groups(images)  # [B, G, H, W, c']
    cg = groups.shape[-1]
    n_pad = groups.shape[1] * cg  # G c' bands, zero-padded
    bands = [(j, min(c, j + cg)) for j in range(0, c, cg)]  # the bands of each group
    geo = [flip_rot_dims(h, v, r) for h, v, r in
           zip(params["hflip"].tolist(), params["vflip"].tolist(), params["rot"].tolist())]
    # view 2's colour maps on the zero-padded pixels [C, G c'], the 1/255 folded in; a1: none
    a2 = torch.zeros(b, c, n_pad)
    a2[:, :, :c] = params["a"] / 255
    k2 = params["k"] / 255
    a1 = torch.eye(c, n_pad) / 255
    color = params["color"].tolist()
    blur = params["blur"].tolist()
    sigma, radius = params["sigma"].tolist(), params["radius"].tolist()
    view1 = torch.empty(b, c, size, size)
    view2 = torch.empty(b, c, size, size)

    def work(samples: Iterator[int]) -> None:
        """The samples handed to one thread; each thread has its own cached scratch."""
        tmp = torch.empty(c, size * size)  # a matrix product writes its output out of order
        planar = None if n_pad == 4 else torch.empty(n_pad // cg, cg, size, size)  # [G, c', s, s]
        for i in samples:
            src = groups[i].permute(0, 3, 1, 2)  # [G, c', H, W] channels-last uint8
            v1, v2 = _resize(src, boxes[i][:4], size), _resize(src, boxes[i][4:], size)  # [G, c', s, s] uint8
            for j, (lo, hi) in enumerate(bands):  # view 1: uint8 -> planar float, one sequential pass
                view1[i, lo:hi].copy_(v1[j, :hi - lo])
            view1[i].mul_(1 / 255)
            dims, transpose = geo[i]  # view 2: flip the uint8 view; colour, blur; transpose on the way out
            v2 = v2.flip(dims) if dims else v2
            if n_pad == 4:  # [4, s s]: the transpose of the row-major pixels, free
                planes = v2.permute(2, 3, 0, 1).reshape(size * size, 4).float().T
            else:  # planar copy first: MKL multiplies by the transpose of a [s s, 3] pixel matrix 3.5x slower
                assert planar is not None
                planes = planar.copy_(v2).view(n_pad, size * size)
            if color[i]:
                bias = k2[i] @ _band_sums(planes)[:c] / (size * size)  # K m / 255, [C]
                torch.addmm(bias[:, None], a2[i], planes, out=tmp).clamp_(0, 1)
            else:
                torch.mm(a1, planes, out=tmp)
            out = tmp.view(c, size, size)
            out = blur_planes(out, sigma[i], radius[i]) if blur[i] else out  # both commute with the transpose
            view2[i].copy_(out.mT if transpose else out)  # one sequential write of the output

    for_each_sample(b, work, workers)  # one intra-op thread per worker thread (glcnet.utils.threads)
    return view1, view2
