"""MoCo v2 baseline (Chen, Fan, Girshick, He 2020) on DeepLabv3+, symmetric, with shuffle-BN.

Query of a view ``x``: ``net`` -> ASPP global average pooling -> MLP ``A -> 256 -> d``
(lightly's ``MoCoProjectionHead``). Key: the same through the momentum copies of ``net``
and the head, no gradient, L2-normalised, computed on the shuffled batch (shuffle-BN;
in one process its equivalent, BatchNorm over ``bn_splits`` sub-batches in both
encoders: :mod:`glcnet.ssl.momentum`). Symmetric loss, as in the MoCo CIFAR-10 demo and
MoCo v3, with InfoNCE against a queue of ``queue_size`` past keys (tau ``moco_temperature``)::

    loss = ( InfoNCE(q(view1), k(view2), Q) + InfoNCE(q(view2), k(view1), Q) ) / 2

Both directions read the queue as it was before the step; then the step's ``2B`` keys,
gathered from all ranks, replace the oldest rows. After each optimizer step
(``on_after_step``): ``theta_k <- m theta_k + (1 - m) theta_q`` (``m = momentum``).
Remaining difference from the original: the GLCNet view pipeline (only view 2 is
photometrically augmented).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import update_momentum

from glcnet.config import MethodConfig
from glcnet.losses import MoCoInfoNCE, embedding_std
from glcnet.ssl.base import SSLMethod
from glcnet.ssl.momentum import (
    KeyQueue,
    check_momentum_options,
    momentum_copy,
    set_bn_splits,
    shuffle,
    split_batch_norm,
    unshuffle,
)
from glcnet.transforms import Views
from glcnet.utils.dist import Gather, no_gather


class MoCoV2(SSLMethod):
    """MoCo v2: query from view 1, momentum key from view 2, queue of negatives (module doc)."""

    name = "mocov2"
    find_unused_parameters = True  # decoder blocks get no gradient
    per_rank_batchnorm = True  # shuffle-BN

    def build(self, m: MethodConfig) -> None:
        check_momentum_options(self.cfg, "queue_size")
        split_batch_norm(self.net)
        self.head = MoCoProjectionHead(self.net.aspp_channels, 256, m.proj_dim)
        self.key_net = momentum_copy(self.net)
        self.key_head = momentum_copy(self.head)
        self.queue = KeyQueue(m.queue_size, m.proj_dim)  # [K, d]
        self.criterion = MoCoInfoNCE(m.moco_temperature)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net.features(x)["aspp"].mean(dim=(2, 3)))  # [B, d]

    @torch.no_grad()
    def key(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        xs, _, idx = shuffle(x, generator=generator)
        k = self.key_head(self.key_net.features(xs)["aspp"].mean(dim=(2, 3)))  # [B, d] shuffled
        return F.normalize(unshuffle(k, idx).float(), dim=1)  # [B, d]

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        v = self.make_views(images, generator)
        set_bn_splits(self, self.cfg.method)
        q1, q2 = self.query(v.view1), self.query(v.view2)  # [B, d] each
        k1, k2 = self.key(v.view1, generator), self.key(v.view2, generator)  # [B, d] each
        queue = self.queue.read_and_push(gather(torch.cat([k1, k2])), push=self.training)  # [K, d]
        loss = 0.5 * (self.criterion(q1, k2, queue, gather=gather) + self.criterion(q2, k1, queue, gather=gather))
        return {"loss": loss, "loss_contrast": loss, "emb_std": embedding_std(q1)}

    @torch.no_grad()
    def on_after_step(self) -> None:
        mom = self.cfg.method.momentum
        update_momentum(self.net, self.key_net, mom)
        update_momentum(self.head, self.key_head, mom)
