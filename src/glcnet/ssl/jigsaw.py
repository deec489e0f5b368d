"""Jigsaw-puzzle baseline (Noroozi & Favaro, ECCV 2016) on DeepLabv3+.

View 1 (``views.size``) is split into a ``g x g`` grid of cells of side ``c = size // g``;
from each cell a tile of side ``t = (c // 16) * 16`` (multiple of 16 for the network) is
cut at a random offset (the gap hides edge continuity). The tiles are shuffled by one of
``jigsaw_permutations`` fixed permutations; each tile goes through the shared
encoder + ASPP, is average-pooled to ``[A]``, and the concatenation ``[g*g*A]`` is
classified by an MLP into the permutation index (cross entropy; ``acc`` is logged).

Permutation set: greedy maximal minimum Hamming distance (Noroozi's algorithm), with a
fixed seed, over ``min(n!, 40000)`` candidates (all ``n!`` when fewer; for the 3x3 grid a
random subset of 40000 of the 9! permutations, as the full set takes > 3 s to search and
reaches the same minimum distance 5 for 1000 permutations).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from glcnet.config import MethodConfig
from glcnet.errors import GlcnetError
from glcnet.losses import embedding_std
from glcnet.models.heads import JigsawHead
from glcnet.ssl.base import SSLMethod
from glcnet.transforms import Views
from glcnet.utils.dist import Gather, no_gather

MAX_CANDIDATES = 40000


def max_hamming_permutations(count: int, n: int, seed: int = 0) -> np.ndarray:
    """``[count, n]`` permutations of ``range(n)``, greedily maximising the minimum pairwise Hamming distance."""
    if n < 2 or count > math.factorial(n):
        raise GlcnetError(f"jigsaw: cannot choose {count} distinct permutations of {n} tiles "
                          f"(at most {math.factorial(n)})")
    rng = np.random.default_rng(seed)
    if math.factorial(n) <= MAX_CANDIDATES:
        cand = np.array(list(itertools.permutations(range(n))), dtype=np.uint8)  # [n!, n]
    else:
        cand = np.unique(np.argsort(rng.random((MAX_CANDIDATES, n)), axis=1).astype(np.uint8), axis=0)
    chosen = [int(rng.integers(len(cand)))]
    min_dist = np.full(len(cand), n + 1, dtype=np.int64)  # distance to the nearest chosen permutation
    for _ in range(count - 1):
        min_dist = np.minimum(min_dist, (cand != cand[chosen[-1]]).sum(axis=1))
        chosen.append(int(min_dist.argmax()))  # chosen ones have distance 0, never picked twice
    return cand[chosen].astype(np.int64)


class Jigsaw(SSLMethod):
    """Jigsaw puzzle of view 1's tiles (module doc)."""

    name = "jigsaw"
    perms: torch.Tensor  # [P, g*g] buffer
    find_unused_parameters = True  # decoder blocks get no gradient

    def build(self, m: MethodConfig) -> None:
        size = self.cfg.views.size
        self.grid = m.jigsaw_grid
        self.cell = size // max(self.grid, 1)
        self.tile = self.cell // 16 * 16
        if self.grid < 2 or self.tile < 16:
            raise GlcnetError(f"jigsaw: views.size={size} with method.jigsaw_grid={self.grid} "
                              f"gives tiles under 16 px (need grid >= 2 and size >= 16 * grid)")
        perms = max_hamming_permutations(m.jigsaw_permutations, self.grid ** 2, seed=0)
        self.register_buffer("perms", torch.from_numpy(perms), persistent=False)  # [P, g*g]
        self.head = JigsawHead(self.net.aspp_channels, self.grid ** 2, m.jigsaw_permutations)

    def network_input(self) -> tuple[int, str]:
        """The network sees the puzzle's tiles, not the view."""
        return self.tile, (f"jigsaw tiles of {self.tile} px (views.size={self.cfg.views.size} / "
                           f"method.jigsaw_grid={self.grid})")

    def tiles(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B, C, s, s]`` -> ``[B, g*g, C, t, t]`` tiles in row-major grid order, random offsets in the cells."""
        b, dev, t, g = x.shape[0], x.device, self.tile, self.grid
        corner = torch.arange(g, device=dev) * self.cell  # [g]
        jitter = torch.randint(0, self.cell - t + 1, (2, b, g * g), generator=generator).to(dev)  # [2, B, T]
        y0 = corner.repeat_interleave(g)[None] + jitter[0]  # [B, T]
        x0 = corner.repeat(g)[None] + jitter[1]  # [B, T]
        ar = torch.arange(t, device=dev)
        ys = (y0[..., None] + ar)[..., :, None]  # [B, T, t, 1]
        xs = (x0[..., None] + ar)[..., None, :]  # [B, T, 1, t]
        bi = torch.arange(b, device=dev)[:, None, None, None]  # [B, 1, 1, 1]
        return x[bi, :, ys, xs].permute(0, 1, 4, 2, 3)  # [B, T, t, t, C] -> [B, T, C, t, t]

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = self.make_views(images, generator).view1  # [B, C, s, s]
        tiles = self.tiles(x, generator)  # [B, T, C, t, t]
        b, n_tiles = tiles.shape[:2]
        label = torch.randint(0, self.perms.shape[0], (b,), generator=generator).to(x.device)  # [B]
        order = self.perms[label]  # [B, T]: position i shows tile order[i]
        shuffled = tiles[torch.arange(b, device=x.device)[:, None], order]  # [B, T, C, t, t]
        aspp = self.net.features(shuffled.flatten(0, 1))["aspp"]  # [B*T, A, t/16, t/16]
        vec = aspp.mean(dim=(2, 3))  # [B*T, A]
        logits = self.head(vec.reshape(b, n_tiles, -1))  # [B, P]
        loss = F.cross_entropy(logits.float(), label)
        acc = (logits.argmax(dim=1) == label).float().mean().detach()
        return {"loss": loss, "loss_ce": loss, "acc": acc, "emb_std": embedding_std(vec)}
