"""Whole-scene inference with an overlapping sliding window and smooth blending.

Windows of side ``window`` start every ``stride`` pixels along each axis, and the last
one is aligned to the far edge, so every pixel is covered. A scene smaller than the
window is reflect-padded to the window and the result cropped back. Each window's class
probabilities ``softmax(model(x))`` are multiplied by a weight ``w(y, x) = g(y) g(x)``
and the scene result is::

    P(p) = sum_windows w(p - origin) * softmax_window(p) / sum_windows w(p - origin)

with ``g`` a Gaussian ``exp(-(i - c)^2 / (2 (window/4)^2))`` (c = window centre), a linear
ramp ``(min(i, window-1-i) + 1) / (window/2)``, or 1 (``mean``). All weights are > 0, so
the normalisation never divides by zero, and window borders (where a convolution sees
padding) count least, which removes seams. Flip TTA averages the probabilities of the
image, its horizontal and its vertical flip (flipped back).

Border effects: a pointwise model gives exactly the single whole-image result. A model
with receptive-field radius r differs from the whole-image pass only at pixels within r
of the edge of some window that lies inside the scene (zero padding there instead of
real neighbours); the blend weights those contributions least.

The scene is processed in bands of window rows (:func:`iter_sliding`): after window row
i only the ``window x width`` band still being accumulated is held, and finished rows are
yielded, so memory grows with the scene width, never with its height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from glcnet.data.splits import window_starts
from glcnet.errors import GlcnetError

ModelFn = Callable[[torch.Tensor], torch.Tensor]  # [B, C, w, w] -> logits [B, K, w, w]
ReadRows = Callable[[int, int], np.ndarray | torch.Tensor]  # (y0, y1) -> [C, y1 - y0, W]
BLENDS = ("gaussian", "linear", "mean")


def count_windows(height: int, width: int, window: int, stride: int) -> int:
    """Number of windows :func:`iter_sliding` runs over a ``height x width`` scene (for progress bars)."""
    rows, cols = window_starts(max(height, window), window, stride), window_starts(max(width, window), window, stride)
    return len(rows) * len(cols)


def blend_weights(window: int, kind: str = "gaussian") -> torch.Tensor:
    """Per-pixel window weight ``[window, window]``, all > 0, maximal at the centre."""
    i = torch.arange(window, dtype=torch.float64)
    if kind == "gaussian":
        sigma = window / 4
        g = torch.exp(-((i - (window - 1) / 2) ** 2) / (2 * sigma**2))
    elif kind == "linear":
        g = (torch.minimum(i, window - 1 - i) + 1) / (window / 2)
    elif kind == "mean":
        g = torch.ones(window, dtype=torch.float64)
    else:
        raise GlcnetError(f"eval.blend: unknown blend {kind!r} (valid: {', '.join(BLENDS)})")
    return (g[:, None] * g[None, :]).float()  # [w, w]


def check_window(window: int, stride: int) -> None:
    """The network needs sides that are multiples of 16; strides must not leave gaps."""
    if window <= 0 or window % 16:
        raise GlcnetError(f"eval.window: must be a positive multiple of 16, got {window}")
    if not 0 < stride <= window:
        raise GlcnetError(f"eval.stride: must be in 1..window ({window}), got {stride}")


def _probs(model_fn: ModelFn, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Softmax of the model on ``x [B, C, w, w]``, averaged over flips when ``tta``."""
    p = model_fn(x).float().softmax(1)  # [B, K, w, w]
    if tta:
        for dim in (-1, -2):  # horizontal, vertical flip
            p = p + model_fn(x.flip(dim)).float().softmax(1).flip(dim)
        p = p / 3
    return p


def _padded(read_rows: ReadRows, height: int, width: int, window: int) -> ReadRows:
    """Reader of the scene reflect-padded to at least ``window`` on both sides."""
    if height >= window and width >= window:
        return read_rows
    whole = read_rows(0, height)  # [C, H, W]: small scene
    whole = whole.cpu().numpy() if isinstance(whole, torch.Tensor) else np.asarray(whole)
    pad = ((0, 0), (0, max(0, window - height)), (0, max(0, window - width)))
    whole = np.pad(whole, pad, mode="reflect" if min(height, width) > 1 else "edge")
    return lambda y0, y1: whole[:, y0:y1]


def _tensor(a: np.ndarray | torch.Tensor, device: torch.device | str) -> torch.Tensor:
    a = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return a.to(device=device, dtype=torch.float32)


@torch.no_grad()
def iter_sliding(read_rows: ReadRows, height: int, width: int, model_fn: ModelFn, *, window: int = 256,
                 stride: int = 128, batch_size: int = 8, blend: str = "gaussian", tta: bool = False,
                 device: torch.device | str = "cpu",
                 on_windows: Callable[[int], None] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(y0, probs [K, h, width])`` bands of the blended scene probabilities, top to bottom.

    ``read_rows(y0, y1)`` returns rows ``y0:y1`` of the scaled scene ``[C, y1-y0, width]``
    (numpy or torch); it is only asked for window-high bands (and for the whole scene
    when it is smaller than the window). The bands cover rows ``0..height-1`` exactly once.
    ``on_windows(n)`` is called after each batch of ``n`` windows (progress bars).
    """
    check_window(window, stride)
    weight = blend_weights(window, blend).to(device)  # [w, w]
    read = _padded(read_rows, height, width, window)
    hp, wp = max(height, window), max(width, window)
    ys, xs = window_starts(hp, window, stride), window_starts(wp, window, stride)
    acc: torch.Tensor | None = None  # [K, w, Wp]: rows ys[i] .. ys[i] + w
    wsum: torch.Tensor | None = None  # [w, Wp]
    for i, y in enumerate(ys):
        band = _tensor(read(y, y + window), device)  # [C, w, Wp]
        if band.shape[-2:] != (window, wp):
            raise GlcnetError(f"scene read returned {list(band.shape)} for rows {y}:{y + window}, "
                              f"expected [C, {window}, {wp}]")
        for j in range(0, len(xs), batch_size):
            bx = xs[j : j + batch_size]
            p = _probs(model_fn, torch.stack([band[:, :, x : x + window] for x in bx]), tta)  # [B, K, w, w]
            if acc is None or wsum is None:
                acc = torch.zeros(p.shape[1], window, wp, device=device)
                wsum = torch.zeros(window, wp, device=device)
            for x, pk in zip(bx, p):
                acc[:, :, x : x + window] += pk * weight
                wsum[:, x : x + window] += weight
            if on_windows is not None:
                on_windows(len(bx))
        assert acc is not None and wsum is not None  # every band has windows
        done = (ys[i + 1] - y) if i + 1 < len(ys) else window  # rows no later window touches
        rows = min(done, height - y)
        if rows > 0:
            yield y, acc[:, :rows, :width] / wsum[:rows, :width]
        acc = torch.cat([acc[:, done:], acc.new_zeros(acc.shape[0], done, wp)], 1)
        wsum = torch.cat([wsum[done:], wsum.new_zeros(done, wp)], 0)


def sliding_probs(model_fn: ModelFn, image: torch.Tensor | np.ndarray, *, window: int = 256, stride: int = 128,
                  batch_size: int = 8, blend: str = "gaussian", tta: bool = False,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Blended class probabilities ``[K, H, W]`` of a whole in-memory scene ``image [C, H, W]``."""
    _, h, w = image.shape
    bands = [p for _, p in iter_sliding(lambda y0, y1: image[:, y0:y1], h, w, model_fn, window=window,
                                        stride=stride, batch_size=batch_size, blend=blend, tta=tta,
                                        device=device)]
    return torch.cat(bands, 1)  # [K, H, W]


def sliding_classes(model_fn: ModelFn, image: torch.Tensor | np.ndarray, **kw) -> torch.Tensor:
    """Class map ``[H, W]`` (int64, on the input's device) = argmax of :func:`sliding_probs`,
    built band by band so the ``[K, H, W]`` probabilities are never held whole."""
    _, h, w = image.shape
    out = None
    for y0, p in iter_sliding(lambda y0, y1: image[:, y0:y1], h, w, model_fn, **kw):
        if out is None:
            out = torch.empty(h, w, dtype=torch.int64, device=p.device)
        out[y0 : y0 + p.shape[1]] = p.argmax(0)
    assert out is not None  # the bands cover every row
    return out

