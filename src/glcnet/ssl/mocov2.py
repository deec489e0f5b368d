"""MoCo v2 baseline (Chen, Fan, Girshick, He 2020) on DeepLabv3+.

Query: view 1 -> ``net`` -> ASPP global average pooling -> MLP ``A -> 256 -> d``.
Key: view 2 -> momentum copies of ``net`` and the head (no gradient). InfoNCE (tau
``moco_temperature``) of each query against its key and a queue of ``queue_size`` past keys.
After each optimizer step (``on_after_step``): ``theta_k <- m theta_k + (1 - m) theta_q``
(``m = momentum``), then the step's keys (gathered from all ranks) replace the oldest in
the queue. Differences from the original: one direction (q from view 1, k from view 2),
the GLCNet view pipeline (only view 2 photometrically augmented), no shuffled BN.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from glcnet.config import MethodConfig
from glcnet.errors import GlcnetError
from glcnet.losses import MoCoInfoNCE, embedding_std
from glcnet.models.heads import ProjectionHead
from glcnet.ssl.base import SSLMethod
from glcnet.transforms import Views
from glcnet.utils.dist import Gather, no_gather


class MoCoV2(SSLMethod):
    """MoCo v2: query from view 1, momentum key from view 2, queue of negatives (module doc)."""

    name = "mocov2"
    queue: torch.Tensor  # [K, d] buffer of past keys
    queue_ptr: torch.Tensor  # [] buffer: the oldest row
    find_unused_parameters = True  # decoder blocks get no gradient

    def build(self, m: MethodConfig) -> None:
        if m.queue_size < 1 or not 0.0 <= m.momentum <= 1.0:
            raise GlcnetError(f"mocov2: need method.queue_size >= 1 and 0 <= method.momentum <= 1, "
                              f"got {m.queue_size} and {m.momentum}")
        self.head = ProjectionHead((self.net.aspp_channels, 256, m.proj_dim))
        self.key_net = copy.deepcopy(self.net).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(m.queue_size, m.proj_dim), dim=1))  # [K, d]
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.criterion = MoCoInfoNCE(m.moco_temperature)
        self._pending: list[torch.Tensor] = []  # keys of this step, enqueued in on_after_step

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        v = self.make_views(images, generator)
        q = self.head(self.net.features(v.view1)["aspp"].mean(dim=(2, 3)))  # [B, d]
        with torch.no_grad():
            k = self.key_head(self.key_net.features(v.view2)["aspp"].mean(dim=(2, 3)))  # [B, d]
            k = F.normalize(k.float(), dim=1)
        loss = self.criterion(q, k, self.queue.clone())
        if self.training:
            self._pending.append(gather(k).detach())  # [W*B, d]
        return {"loss": loss, "loss_contrast": loss, "emb_std": embedding_std(q)}

    @torch.no_grad()
    def on_after_step(self) -> None:
        mom = self.cfg.method.momentum
        for q_mod, k_mod in ((self.net, self.key_net), (self.head, self.key_head)):
            for pq, pk in zip(q_mod.parameters(), k_mod.parameters()):
                pk.mul_(mom).add_(pq.detach(), alpha=1 - mom)
            for bq, bk in zip(q_mod.buffers(), k_mod.buffers()):
                bk.copy_(bq)
        for keys in self._pending:
            self._enqueue(keys)
        self._pending.clear()

    def _enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest queue rows with ``keys [n, d]`` (ring buffer)."""
        size = self.queue.shape[0]
        keys = keys[-size:].to(self.queue.dtype)  # [n', d]
        rows = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[rows] = keys
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)
