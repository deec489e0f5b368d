"""Every loss against a naive loop implementation and an analytic value; heads' shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glcnet.losses import (
    LocalMatchingLoss,
    MaskedMSELoss,
    MoCoInfoNCE,
    NTXentLoss,
    embedding_std,
    pool_patches,
    style_vector,
)
from glcnet.models.heads import JigsawHead, ProjectionHead, ReconstructionHead

pytestmark = pytest.mark.usefixtures("one_thread")


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def naive_ntxent(z1: torch.Tensor, z2: torch.Tensor, t: float, valid=None) -> float:
    """Loop over anchors of SimCLR's formula; invalid pairs are neither anchors nor negatives."""
    n = z1.shape[0]
    keep = [i for i in range(n) if valid is None or bool(valid[i])]
    u = [z1[i] for i in keep] + [z2[i] for i in keep]
    m = len(keep)
    total = 0.0
    for i in range(2 * m):
        j = (i + m) % (2 * m)
        den = sum(math.exp(cos(u[i], u[k]) / t) for k in range(2 * m) if k != i)
        total += -math.log(math.exp(cos(u[i], u[j]) / t) / den)
    return total / (2 * m)


@pytest.mark.parametrize("t", [0.5, 0.2])
def test_ntxent_matches_naive_loop(t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    assert float(NTXentLoss(t)(z1, z2)) == pytest.approx(naive_ntxent(z1, z2, t), rel=1e-5)


def test_ntxent_analytic_values():
    n, t = 4, 0.5
    e = torch.eye(n, 8)  # N orthonormal embeddings, identical in both views
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (2 * n - 2)))
    assert float(NTXentLoss(t)(e, e * 3.0)) == pytest.approx(expected, rel=1e-6)  # scale-invariant
    same = torch.ones(n, 8)  # collapse: every similarity is 1 -> log(2N - 1)
    assert float(NTXentLoss(t)(same, same)) == pytest.approx(math.log(2 * n - 1), rel=1e-6)


def test_ntxent_valid_mask_drops_pairs_and_negatives():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    valid = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    got = float(NTXentLoss(0.5)(z1, z2, valid=valid))
    assert got == pytest.approx(naive_ntxent(z1, z2, 0.5, valid), rel=1e-5)
    assert got == pytest.approx(float(NTXentLoss(0.5)(z1[valid], z2[valid])), rel=1e-6)


def test_ntxent_gradient_flows_and_all_invalid_is_zero():
    z1 = torch.randn(4, 3, requires_grad=True)
    z2 = torch.randn(4, 3, requires_grad=True)
    NTXentLoss(0.5)(z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and torch.isfinite(z1.grad).all()
    loss = NTXentLoss(0.5)(z1, z2, valid=torch.zeros(4, dtype=torch.bool))
    assert float(loss.detach()) == 0.0


def test_local_matching_loss_is_ntxent_over_all_valid_patches():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)  # [B, P, d]
    valid = torch.rand(3, 4, generator=g) > 0.3
    got = float(LocalMatchingLoss(0.5)(z1, z2, valid))
    assert got == pytest.approx(naive_ntxent(z1.reshape(12, 6), z2.reshape(12, 6), 0.5, valid.reshape(12)), rel=1e-5)


def test_style_vector_matches_numpy():
    f = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    a = f.numpy().reshape(2, 3, -1)
    s = style_vector(f).numpy()
    assert s.shape == (2, 6)
    np.testing.assert_allclose(s[:, :3], a.mean(axis=2), rtol=1e-12)
    np.testing.assert_allclose(s[:, 3:], a.var(axis=2), rtol=1e-12)
    np.testing.assert_allclose(style_vector(f, style=False).numpy(), a.mean(axis=2), rtol=1e-12)


def test_pool_patches_constant_regions_and_cell_aligned_mean():
    feat = torch.zeros(2, 3, 8, 8)  # decoder map at 1/4 of a 32 px view
    feat[:, :, :, :4] = torch.tensor([1.0, 2.0, 3.0])[:, None, None]  # left half
    feat[:, :, :, 4:] = torch.tensor([5.0, 7.0, 9.0])[:, None, None]  # right half
    feat[1] *= 10
    boxes = torch.tensor([[[2.0, 2.0, 12.0, 14.0], [18.0, 4.0, 30.0, 16.0], [8.0, 8.0, 24.0, 24.0]]]).repeat(2, 1, 1)
    pooled = pool_patches(feat, boxes, spatial_scale=0.25)  # [B, P, C]
    assert pooled.shape == (2, 3, 3)
    torch.testing.assert_close(pooled[0, 0], torch.tensor([1.0, 2.0, 3.0]))  # inside the left region
    torch.testing.assert_close(pooled[0, 1], torch.tensor([5.0, 7.0, 9.0]))  # inside the right region
    torch.testing.assert_close(pooled[0, 2], torch.tensor([3.0, 4.5, 6.0]))  # straddles evenly -> average
    torch.testing.assert_close(pooled[1], pooled[0] * 10)  # each box reads its own image

    rand = torch.randn(1, 4, 8, 8)
    box = torch.tensor([[[4.0, 8.0, 20.0, 24.0]]])  # view px -> cells x 1..4, y 2..5
    torch.testing.assert_close(pool_patches(rand, box)[0, 0], rand[0, :, 2:6, 1:5].mean(dim=(1, 2)))


def naive_moco(q, k, queue, t) -> float:
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(cos(q[i], k[i]) / t)
        neg = sum(math.exp(cos(q[i], queue[j]) / t) for j in range(queue.shape[0]))
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def test_moco_infonce_matches_naive_and_analytic():
    g = torch.Generator().manual_seed(3)
    q, k, queue = (torch.randn(n, 6, generator=g, dtype=torch.float64) for n in (5, 5, 9))
    assert float(MoCoInfoNCE(0.2)(q, k, queue)) == pytest.approx(naive_moco(q, k, queue, 0.2), rel=1e-5)
    e = torch.eye(8)
    t, kq = 0.2, 4  # q = k orthonormal, queue orthogonal to every q
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + kq))
    assert float(MoCoInfoNCE(t)(e[:3], e[:3], e[4:8])) == pytest.approx(expected, rel=1e-6)


def test_masked_mse_matches_naive_and_ignores_unmasked():
    g = torch.Generator().manual_seed(4)
    pred, target = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    mask = torch.rand(2, 1, 4, 5, generator=g) > 0.5
    num, den = 0.0, 0
    for b in range(2):
        for y in range(4):
            for x in range(5):
                if mask[b, 0, y, x]:
                    for c in range(3):
                        num += float(pred[b, c, y, x] - target[b, c, y, x]) ** 2
                        den += 1
    assert float(MaskedMSELoss()(pred, target, mask)) == pytest.approx(num / den, rel=1e-5)
    shifted = torch.where(mask, target + 1.0, target + 100.0)  # error 1 on masked, 100 elsewhere
    assert float(MaskedMSELoss()(shifted, target, mask[:, 0])) == pytest.approx(1.0)


def test_embedding_std_collapse_and_orthonormal():
    assert float(embedding_std(torch.ones(5, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0]))) == pytest.approx(0.0, abs=1e-7)
    d = 16
    assert float(embedding_std(torch.eye(d) * 5)) == pytest.approx(1 / math.sqrt(d), rel=1e-5)


def test_heads_shapes():
    head = ProjectionHead((12, 8, 4), bn=True)
    assert head(torch.randn(3, 5, 12)).shape == (3, 5, 4)  # leading dims kept
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert ReconstructionHead(16, 4)(torch.randn(2, 16, 8, 8)).shape == (2, 4, 32, 32)
    assert JigsawHead(16, 9, 30)(torch.randn(2, 9, 16)).shape == (2, 30)


def test_contrastive_losses_stay_float32_under_autocast():
    g = torch.Generator().manual_seed(5)
    z1, z2, queue = (torch.randn(n, 16, generator=g) for n in (8, 8, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 similarities would be off by ~1e-4
        amp = float(NTXentLoss(0.2)(z1, z2)), float(MoCoInfoNCE(0.2)(z1, z2, queue))
    assert amp == pytest.approx((naive_ntxent(z1, z2, 0.2), naive_moco(z1, z2, queue, 0.2)), rel=1e-5)
