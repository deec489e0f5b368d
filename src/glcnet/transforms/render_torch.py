"""Batched renderer of two views: one ``grid_sample`` per view for the whole batch.

Any dtype (uint8 tiles mean ``value / 255``), any device: the renderer of float tiles and
of every tile on a GPU (:class:`~glcnet.transforms.views.ViewGenerator` picks it).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from glcnet.transforms.geometry import box_matrix, flip_rot_matrix
from glcnet.transforms.params import ViewParams
from glcnet.transforms.photometric import blur_samples, color_map
from glcnet.utils.threads import for_each_sample


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
    if hflip is None or vflip is None or rot is None:
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


def _render_slice(images: Tensor, p: ViewParams, sl: slice, size: int) -> tuple[Tensor, Tensor]:
    """View 1 and view 2 of the samples ``sl`` (``images`` is that slice)."""
    view1 = render(images, p["box1"][sl], size)  # [b, C, s, s]
    view2 = render(images, p["box2"][sl], size, p["hflip"][sl], p["vflip"][sl], p["rot"][sl])
    if bool(p["color"][sl].any()):
        color_map(view2, p["a"][sl], p["k"][sl])
    blur_samples(view2, p["blur"][sl], p["sigma"][sl], p["radius"][sl])
    return view1, view2


def render_torch(images: Tensor, params: ViewParams, size: int, chunk: int = 0) -> tuple[Tensor, Tensor]:
    """View 1 and view 2 (float ``[B, C, size, size]``) of ``images`` (float in [0, 1] or uint8).

    On the CPU, sub-batches of ``chunk`` samples (0: the whole batch), so intermediates
    stay in cache, shared by torch's threads, each on one intra-op thread
    (:func:`~glcnet.utils.threads.for_each_sample`: no collapse when other processes share
    the cores); on a GPU the whole batch (few, large kernels). The result depends neither
    on the chunking nor on the threads.
    """
    if images.dtype == torch.uint8:
        images = images.float().mul_(1 / 255)
    b = images.shape[0]
    if images.device.type != "cpu":
        return _render_slice(images, params, slice(0, b), size)
    step = chunk if chunk > 0 else b
    view1 = images.new_empty(b, images.shape[1], size, size)
    view2 = torch.empty_like(view1)

    def work(chunks: Iterator[int]) -> None:
        for j in chunks:
            sl = slice(j * step, (j + 1) * step)
            view1[sl], view2[sl] = _render_slice(images[sl], params, sl, size)

    for_each_sample(-(-b // step), work)
    return view1, view2
