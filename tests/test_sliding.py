"""Sliding-window inference equals a single whole-image pass (up to documented border effects)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glcnet.data.splits import window_starts
from glcnet.errors import GlcnetError
from glcnet.finetune.sliding import blend_weights, iter_sliding, sliding_classes, sliding_probs


def pointwise_model(c: int = 3, k: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(c, 8, 1), nn.Tanh(), nn.Conv2d(8, k, 1)).eval()


def whole(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(image[None]).softmax(1)[0]  # [K, H, W]


def test_window_starts_cover_and_align_to_edge():
    assert window_starts(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert window_starts(64, 32, 32) == [0, 32]
    assert window_starts(20, 32, 16) == [0]
    for size, w, s in [(1000, 256, 128), (257, 256, 128), (300, 64, 50)]:
        starts = window_starts(size, w, s)
        assert starts[-1] == size - w and all(0 < b - a <= s for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("blend", ["gaussian", "linear", "mean"])
def test_blend_weights_positive_and_peak_at_centre(blend):
    w = blend_weights(32, blend)
    assert w.shape == (32, 32) and bool((w > 0).all())
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.T)
    assert w[15, 15] == w.max() and (blend == "mean" or w[0, 0] < w[15, 15])


@pytest.mark.parametrize("blend,tta", [("gaussian", False), ("linear", True), ("mean", False)])
@pytest.mark.parametrize("size", [(100, 150), (20, 45), (32, 32)])
def test_pointwise_model_matches_whole_image(blend, tta, size):
    model = pointwise_model()
    image = torch.rand(3, *size)
    got = sliding_probs(model, image, window=32, stride=12, batch_size=5, blend=blend, tta=tta)
    assert got.shape == (4, *size)
    assert torch.allclose(got, whole(model, image), atol=1e-5)


def test_conv_model_differs_only_at_inner_window_edges():
    """3x3 conv (zero padding, radius 1): only pixels on a window edge inside the scene can differ."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1)).eval()
    h, w, win, stride = 70, 90, 32, 16
    image = torch.rand(2, h, w)
    got = sliding_probs(model, image, window=win, stride=stride, blend="gaussian")
    ref = whole(model, image)
    edge = torch.zeros(h, w, dtype=torch.bool)  # pixels on the edge of a window, not on the scene edge
    for y in window_starts(h, win, stride):
        for x in window_starts(w, win, stride):
            if y > 0:
                edge[y, x : x + win] = True
            if y + win < h:
                edge[y + win - 1, x : x + win] = True
            if x > 0:
                edge[y : y + win, x] = True
            if x + win < w:
                edge[y : y + win, x + win - 1] = True
    diff = (got - ref).abs().amax(0)  # [H, W]
    assert diff[~edge].max() < 1e-5
    assert diff[edge].max() > 1e-4  # the border effect is real and this test would see it


def test_streaming_reads_window_bands_and_yields_rows_once():
    model = pointwise_model(c=2, k=3)
    image = torch.rand(2, 90, 50)
    calls, rows = [], []

    def read(y0, y1):
        calls.append((y0, y1))
        return image[:, y0:y1].numpy()

    for y0, band in iter_sliding(read, 90, 50, model, window=32, stride=16, batch_size=2):
        assert band.shape[0] == 3 and band.shape[2] == 50
        rows += range(y0, y0 + band.shape[1])
    assert rows == list(range(90))
    assert all(y1 - y0 == 32 for y0, y1 in calls) and len(calls) == len(window_starts(90, 32, 16))


@pytest.mark.parametrize("window,stride", [(30, 10), (32, 0), (32, 40)])
def test_bad_window_or_stride(window, stride):
    with pytest.raises(GlcnetError, match="eval"):
        sliding_probs(pointwise_model(), torch.rand(3, 40, 40), window=window, stride=stride)


def test_sliding_classes_is_argmax_of_probs():
    model = pointwise_model()
    image = torch.rand(3, 70, 50)
    probs = sliding_probs(model, image, window=32, stride=16)
    assert torch.equal(sliding_classes(model, image, window=32, stride=16), probs.argmax(0))
