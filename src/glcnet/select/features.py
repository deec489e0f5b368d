"""Embeddings of candidate tiles by a frozen network: what ``glcnet select`` chooses from.

Each tile goes through the encoder and the ASPP (no decoder) of a frozen network whose
batch-norm statistics were first recomputed on the same tiles for any network
(:mod:`glcnet.models.batchnorm`, as the probe does), and its ASPP map ``A [C, h, w]`` is
summarised as one vector, L2-normalised:

- ``style``: per channel the mean and the standard deviation over space, ``[2C]`` (GLCNet's
  global style statistics: what the tile is made of and how varied it is);
- ``mean``: the mean only, ``[C]`` (SimCLR's global pooling);
- ``layout``: the map average-pooled to 2 x 2, ``[4C]`` (where things are in the tile).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from glcnet.errors import GlcnetError

SUMMARIES = ("style", "mean", "layout")


def tile_images(ds: Any, tiles: Sequence[Any]) -> torch.Tensor:
    """The tiles ``[N, C, s, s]`` (scaled to [0, 1]), centre-cropped to the smallest side, a multiple of 16."""
    from glcnet.data.raster import scale

    side = min(min(t.width, t.height) for t in tiles) // 16 * 16
    if side < 16:
        raise GlcnetError(f"{ds.root}: tiles under 16 px cannot be embedded")
    out = np.empty((len(tiles), len(ds.bands), side, side), dtype=np.float32)
    for i, t in enumerate(tiles):
        y, x = t.y + (t.height - side) // 2, t.x + (t.width - side) // 2
        out[i] = scale(np.asarray(ds.raw(t.scene)[:, y:y + side, x:x + side]), ds.value_range, ds.nodata)
    return torch.from_numpy(out)


@torch.no_grad()
def embed(net: Any, images: torch.Tensor, summary: str = "style", batch_size: int = 64) -> np.ndarray:
    """``[N, D]`` L2-normalised summaries (module doc) of the ASPP maps of ``images [N, C, s, s]``;
    ``net`` (a :class:`~glcnet.models.DeepLab`) is used as it is, in eval mode."""
    if summary not in SUMMARIES:
        raise GlcnetError(f"select: --features {summary!r}: expected one of {', '.join(SUMMARIES)}")
    net.eval()
    dev = next(net.parameters()).device
    rows = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(dev)
        a = net.decoder.aspp(net.encoder((x - net.mean) / net.std)[-1]).float()  # [B, C, h, w]
        if summary == "style":
            v = torch.cat([a.mean((2, 3)), a.flatten(2).std(2, unbiased=False)], 1)
        elif summary == "mean":
            v = a.mean((2, 3))
        else:
            v = F.adaptive_avg_pool2d(a, 2).flatten(1)
        rows.append(F.normalize(v, dim=1).cpu())
    return torch.cat(rows).numpy()
