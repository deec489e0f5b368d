"""GLCNet-M: GLCNet's two terms with a momentum encoder and queues of negatives, as in MoCo v2.

Same views, heads and matched patches as :mod:`glcnet.ssl.glcnet`; the positives and the
negatives change. The queries come from ``net`` and the heads, over both views in one
pass; the keys come from their momentum copies (no gradient, L2-normalised, shuffle-BN:
:mod:`glcnet.ssl.momentum`). With ``g`` the style embedding of a view, ``z`` a patch
embedding, ``'`` marking keys and InfoNCE of :mod:`glcnet.losses.moco` (tau ``moco_temperature``)::

    L_global = ( InfoNCE(g1, g2', Q_style) + InfoNCE(g2, g1', Q_style) ) / 2
    L_local  = ( InfoNCE(z1, z2', Q_patch) + InfoNCE(z2, z1', Q_patch) ) / 2    over valid patches
    loss     = lam L_global + (1 - lam) L_local

``Q_style`` holds the last ``queue_size`` style keys, ``Q_patch`` the last ``patch_queue_size``
patch keys (valid patches only). Both directions read a queue as it was before the step;
then the step's keys (both views, gathered from every rank) are pushed. GLCNet contrasts a
patch with the other ``2 B P - 2`` patches of the batch; here its negatives are thousands of
patches of past batches, from a slowly moving encoder. ``fn_topk`` > 0 (``glcnet_m_fn``):
the ``fn_topk`` queued patches most similar to the anchor's key ``z'`` are not negatives
(:mod:`glcnet.losses.false_negatives`). After each optimizer step the key encoder follows
``theta_k <- m theta_k + (1 - m) theta_q`` (``m = momentum``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.utils import update_momentum

from glcnet.config import MethodConfig
from glcnet.losses import MoCoInfoNCE, embedding_std, pool_patches, style_vector
from glcnet.ssl.glcnet import GLCNet
from glcnet.ssl.momentum import (
    KeyQueue,
    check_momentum_options,
    momentum_copy,
    set_bn_splits,
    shuffle,
    split_batch_norm,
    unshuffle,
)
from glcnet.ssl.patches import sample_patches
from glcnet.transforms import Views
from glcnet.utils.dist import Gather, no_gather


class GLCNetM(GLCNet):
    """GLCNet with a momentum encoder and queues of style and patch keys (module doc)."""

    name = "glcnet_m"
    per_rank_batchnorm = True  # shuffle-BN

    def build(self, m: MethodConfig) -> None:
        super().build(m)  # GLCNet's option checks and heads
        has_global, has_local = self.global_head is not None, self.local_head is not None
        check_momentum_options(self.cfg, *(["queue_size"] if has_global else []),
                               *(["patch_queue_size"] if has_local else []))
        split_batch_norm(self.net)
        self.key_net = momentum_copy(self.net)
        self.key_global_head = None if self.global_head is None else momentum_copy(self.global_head)
        self.key_local_head = None if self.local_head is None else momentum_copy(self.local_head)
        self.style_queue = KeyQueue(m.queue_size, m.proj_dim) if has_global else None  # [K, d]
        self.patch_queue = KeyQueue(m.patch_queue_size, m.proj_dim) if has_local else None  # [Kp, d]
        self.global_loss = MoCoInfoNCE(m.moco_temperature)
        self.local_loss = MoCoInfoNCE(m.moco_temperature, m.fn_topk)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, boxes: torch.Tensor | None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Momentum-encoder style keys ``[N, d]`` and patch keys ``[N, P, d]`` of ``x [N, C, s, s]``."""
        # boxes travel with their samples
        xs, moved, idx = shuffle(x, *([] if boxes is None else [boxes]), generator=generator)
        feats = self.key_net.features(xs)
        g = p = None
        if self.key_global_head is not None:
            g = self.key_global_head(style_vector(feats["aspp"], self.cfg.method.style))  # [N, d] shuffled
            g = F.normalize(unshuffle(g, idx).float(), dim=-1)
        if self.key_local_head is not None:
            p = self.key_local_head(pool_patches(feats["decoder"], moved[0], 0.25))  # [N, P, d] shuffled
            p = F.normalize(unshuffle(p, idx).float(), dim=-1)
        return g, p

    def forward(self, images: torch.Tensor | Views, gather: Gather = no_gather,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        m = self.cfg.method
        v = self.make_views(images, generator)
        set_bn_splits(self, m)
        x = torch.cat([v.view1, v.view2])  # [2B, C, s, s] both views in one pass
        boxes = valid = None
        if self.local_head is not None:
            boxes1, boxes2, valid = sample_patches(v, m.patch_num, m.patch_size, generator)  # [B, P, 4] x2, [B, P]
            boxes = torch.cat([boxes1, boxes2])  # [2B, P, 4]
        feats = self.net.features(x)
        g_key, p_key = self.keys(x, boxes, generator)  # [2B, d], [2B, P, d]
        out: dict[str, torch.Tensor] = {}
        loss = x.new_zeros(())
        if self.global_head is not None:
            assert self.style_queue is not None and g_key is not None
            g1, g2 = self.global_head(style_vector(feats["aspp"], m.style)).chunk(2)  # [B, d] each
            k1, k2 = g_key.chunk(2)
            queue = self.style_queue.read_and_push(gather(g_key), push=self.training)  # [K, d]
            out["loss_global"] = 0.5 * (self.global_loss(g1, k2, queue, gather=gather)
                                        + self.global_loss(g2, k1, queue, gather=gather))
            loss = loss + m.lam * out["loss_global"]
            out["emb_std"] = embedding_std(g1)
        if self.local_head is not None:
            assert self.patch_queue is not None and p_key is not None and boxes is not None and valid is not None
            z1, z2 = self.local_head(pool_patches(feats["decoder"], boxes, 0.25)).chunk(2)  # [B, P, d] each
            k1, k2 = p_key.chunk(2)  # [B, P, d] each
            ok = gather(torch.cat([valid, valid]).flatten().float()) > 0.5  # [W*2B*P] valid keys of all ranks
            queue = self.patch_queue.read_and_push(gather(p_key.flatten(0, 1))[ok], push=self.training)  # [Kp, d]
            vf = valid.flatten()  # [B*P]
            out["loss_local"] = 0.5 * (self.local_loss(z1.flatten(0, 1), k2.flatten(0, 1), queue, vf, gather)
                                       + self.local_loss(z2.flatten(0, 1), k1.flatten(0, 1), queue, vf, gather))
            loss = loss + (1 - m.lam) * out["loss_local"]
            out.setdefault("emb_std", embedding_std(z1[valid]))
        out["loss"] = loss
        return out

    @torch.no_grad()
    def on_after_step(self) -> None:
        mom = self.cfg.method.momentum
        update_momentum(self.net, self.key_net, mom)
        for head, key_head in ((self.global_head, self.key_global_head), (self.local_head, self.key_local_head)):
            if head is not None and key_head is not None:
                update_momentum(head, key_head, mom)
