"""Losses of the dense methods (false-negative-aware contrast, queue InfoNCE, VICRegL) against
naive loops of their docstring formulas and analytic values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glcnet.losses import LocalMatchingLoss, MoCoInfoNCE, NTXentLoss, VICRegLLoss, false_negatives

pytestmark = pytest.mark.usefixtures("one_thread")


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def naive_ntxent_fn(z1, z2, t: float, topk: int, valid=None) -> float:
    """SimCLR's formula; the ``topk`` rows most similar to the anchor's positive leave its denominator."""
    n = z1.shape[0]
    keep = [i for i in range(n) if valid is None or bool(valid[i])]
    u = [z1[i] for i in keep] + [z2[i] for i in keep]
    m = len(keep)
    total = 0.0
    for i in range(2 * m):
        j = (i + m) % (2 * m)
        cands = sorted((c for c in range(2 * m) if c not in (i, j)), key=lambda c: -cos(u[j], u[c]))
        pos = math.exp(cos(u[i], u[j]) / t)
        total += -math.log(pos / (pos + sum(math.exp(cos(u[i], u[c]) / t) for c in cands[topk:])))
    return total / (2 * m)


def naive_moco(q, k, queue, t: float, topk: int = 0, valid=None) -> float:
    rows = [i for i in range(q.shape[0]) if valid is None or bool(valid[i])]
    total = 0.0
    for i in rows:
        negs = sorted(range(queue.shape[0]), key=lambda j: -cos(k[i], queue[j]))[topk:]
        pos = math.exp(cos(q[i], k[i]) / t)
        total += -math.log(pos / (pos + sum(math.exp(cos(q[i], queue[j]) / t) for j in negs)))
    return total / max(1, len(rows))


def test_false_negatives_picks_topk_candidates():
    sim = torch.tensor([[0.9, 0.1, 0.8, 0.5], [0.2, 0.3, 0.1, 0.0]])
    assert false_negatives(sim, 2).tolist() == [[True, False, True, False], [True, True, False, False]]
    cand = torch.tensor([[False, True, True, True], [True, False, False, False]])
    assert false_negatives(sim, 2, cand).tolist() == [[False, False, True, True], [True, False, False, False]]
    assert not false_negatives(sim, 0).any()


@pytest.mark.parametrize("topk", [1, 3])
def test_ntxent_false_negative_removal_matches_naive(topk):
    g = torch.Generator().manual_seed(7)
    z1, z2 = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(2))
    valid = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    got = float(NTXentLoss(0.5, fn_topk=topk)(z1, z2, valid=valid))
    assert got == pytest.approx(naive_ntxent_fn(z1, z2, 0.5, topk, valid), rel=1e-6)
    assert got < float(NTXentLoss(0.5)(z1, z2, valid=valid))  # fewer negatives, smaller loss
    p1, p2, pv = z1.reshape(2, 3, 5), z2.reshape(2, 3, 5), valid.reshape(2, 3)  # [B, P, d] patches
    assert float(LocalMatchingLoss(0.5, fn_topk=topk)(p1, p2, pv)) == pytest.approx(got, rel=1e-9)


def test_ntxent_all_negatives_removed_is_zero():
    z = torch.randn(4, 3)
    assert float(NTXentLoss(0.5, fn_topk=6)(z, z + 0.1)) == pytest.approx(0.0, abs=1e-6)  # 2N-2 = 6 negatives


def test_queue_infonce_matches_naive_lightly_and_analytic():
    from lightly.loss import NTXentLoss as LightlyNTXent

    g = torch.Generator().manual_seed(3)
    q, k, queue = (torch.randn(n, 6, generator=g) for n in (5, 5, 9))
    ours = float(MoCoInfoNCE(0.2)(q, k, queue))
    assert ours == pytest.approx(naive_moco(q, k, queue, 0.2), rel=1e-5)
    ref = LightlyNTXent(temperature=0.2, memory_bank_size=(9, 6))  # MoCo mode of lightly's loss
    ref.memory_bank.bank = F.normalize(queue, dim=1)
    assert ours == pytest.approx(float(ref(q, k)), rel=1e-5)
    e = torch.eye(8)
    t, kq = 0.2, 4  # q = k orthonormal, queue orthogonal to every q
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + kq))
    assert float(MoCoInfoNCE(t)(e[:3], e[:3], e[4:8])) == pytest.approx(expected, rel=1e-6)
    # the 2 queue rows equal to k are false negatives: removing them leaves the orthogonal ones
    queue2 = torch.cat([e[:1], e[:1], e[4:8]])
    assert float(MoCoInfoNCE(t, fn_topk=2)(e[:1], e[:1], queue2)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("topk", [0, 2])
def test_queue_infonce_valid_rows_and_false_negatives_match_naive(topk):
    g = torch.Generator().manual_seed(4)
    q, k, queue = (torch.randn(n, 5, generator=g, dtype=torch.float64) for n in (6, 6, 10))
    valid = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)
    got = float(MoCoInfoNCE(0.3, fn_topk=topk)(q, k, queue, valid))
    assert got == pytest.approx(naive_moco(q, k, queue, 0.3, topk, valid), rel=1e-6)
    assert float(MoCoInfoNCE(0.3)(q, k, queue, torch.zeros(6, dtype=torch.bool))) == 0.0


# ----------------------------------------------------------------------------- VICRegL
def naive_vicreg(x: torch.Tensor, y: torch.Tensor, lam: float, mu: float, nu: float, eps: float = 1e-4) -> float:
    """l(x, y) of the docstring by loops; ``x, y [B, R, d]``."""
    b, r, d = x.shape

    def var(z):
        return sum(max(0.0, 1 - math.sqrt(float(z[:, i, j].var()) + eps)) for i in range(r) for j in range(d)) / (r * d)

    def cov(z):
        total = 0.0
        for i in range(r):
            c = z[:, i, :] - z[:, i, :].mean(0)
            m = c.T @ c / (b - 1)
            total += sum(float(m[j, k]) ** 2 for j in range(d) for k in range(d) if j != k) / d
        return total / r

    inv = float(((x - y) ** 2).mean())
    return lam * inv + mu * (var(x) + var(y)) / 2 + nu * (cov(x) + cov(y)) / 2


def naive_nn(a, b, pa, pb, k: int, by_feature: bool):
    """NN(a -> b, k): per image, each cell of a with its nearest cell of b; the k closest pairs, sorted."""
    xs, ys = [], []
    for s in range(a.shape[0]):
        pairs = []
        for i in range(a.shape[1]):
            dist = [float(((a[s, i] - b[s, j]) if by_feature else (pa[s, i] - pb[s, j])).norm())
                    for j in range(b.shape[1])]
            j = min(range(len(dist)), key=dist.__getitem__)
            pairs.append((dist[j], i, j))
        pairs.sort()
        xs.append(torch.stack([a[s, i] for _, i, _ in pairs[:k]]))
        ys.append(torch.stack([b[s, j] for _, _, j in pairs[:k]]))
    return torch.stack(xs), torch.stack(ys)


def naive_vicregl(g1, g2, l1, l2, p1, p2, w, matches) -> tuple[float, float]:
    glob = naive_vicreg(g1[:, None], g2[:, None], *w)
    flat = [x.flatten(1, 2) for x in (l1, l2, p1, p2)]

    def pair(a, b, pa, pb):
        terms = []
        for by_feature in (False, True):
            x0, y0 = naive_nn(a, b, pa, pb, matches[0], by_feature)
            x1, y1 = naive_nn(b, a, pb, pa, matches[1], by_feature)
            terms.append((naive_vicreg(x0, y0, *w) + naive_vicreg(x1, y1, *w)) / 2)
        return sum(terms)

    la, lb, pa, pb = flat
    return glob, (pair(la, lb, pa, pb) + pair(lb, la, pb, pa)) / 2


def test_vicregl_matches_naive_formula():
    g = torch.Generator().manual_seed(11)
    b, h, e = 4, 3, 5
    g1, g2 = (torch.randn(b, e, generator=g, dtype=torch.float64) for _ in range(2))
    l1, l2 = (torch.randn(b, h, h, e, generator=g, dtype=torch.float64) for _ in range(2))
    p1, p2 = (torch.rand(b, h, h, 2, generator=g, dtype=torch.float64) * 16 for _ in range(2))  # no ties
    w, matches = (25.0, 20.0, 2.0), (5, 3)
    glob, local = VICRegLLoss(w, matches)(g1, g2, l1, l2, p1, p2)
    ref_glob, ref_local = naive_vicregl(g1, g2, l1, l2, p1, p2, w, matches)
    assert float(glob) == pytest.approx(ref_glob, rel=1e-5)
    assert float(local) == pytest.approx(ref_local, rel=1e-5)


def test_vicregl_equals_lightly_vicregl_loss():
    """lightly's ``VICRegLLoss`` (the authors' code) gives the same two terms."""
    from lightly.loss import VICRegLLoss as LightlyVICRegL

    g = torch.Generator().manual_seed(12)
    b, h, e = 6, 4, 16
    g1, g2 = (torch.randn(b, e, generator=g, dtype=torch.float64) for _ in range(2))
    l1, l2 = (torch.randn(b, h, h, e, generator=g, dtype=torch.float64) for _ in range(2))
    p1, p2 = (torch.rand(b, h, h, 2, generator=g, dtype=torch.float64) * 16 for _ in range(2))
    ref = LightlyVICRegL(lambda_param=25.0, mu_param=20.0, nu_param=2.0, num_matches=(6, 3))
    views = [(g1, l1), (g2, l2)]
    glob, local = VICRegLLoss((25.0, 20.0, 2.0), (6, 3))(g1, g2, l1, l2, p1, p2)
    assert float(glob) == pytest.approx(float(ref._global_loss(views)), rel=1e-9)
    assert float(local) == pytest.approx(float(ref._local_loss(views, [p1, p2])), rel=1e-9)
    alpha = 0.75
    assert float(alpha * glob + (1 - alpha) * local) == pytest.approx(float(ref(views, [p1, p2])), rel=1e-9)


def test_vicregl_analytic_values():
    b, h, e = 4, 2, 3
    const_g, const_l = torch.ones(b, e), torch.ones(b, h, h, e)  # collapse: no variance, no covariance
    p = torch.rand(b, h, h, 2)
    glob, local = VICRegLLoss((25.0, 25.0, 1.0), (3, 2))(const_g, const_g, const_l, const_l, p, p)
    hinge = 1 - math.sqrt(1e-4)  # std sqrt(0 + eps) everywhere
    assert float(glob) == pytest.approx(25 * hinge, rel=1e-6)
    assert float(local) == pytest.approx(2 * 25 * hinge, rel=1e-6)  # location + feature matches
    # identical views of decorrelated, unit-variance embeddings: every term is 0
    z = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) * math.sqrt(3 / 4) * 1.01
    loc = z[:, None, None].expand(b, h, h, e)
    glob, local = VICRegLLoss()(z, z, loc, loc, p, p)
    assert float(glob) == pytest.approx(0.0, abs=1e-6) and float(local) == pytest.approx(0.0, abs=1e-6)


def test_vicregl_gradient_and_option_errors():
    from glcnet.errors import GlcnetError

    g1, g2 = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6)
    l1, l2 = torch.randn(4, 2, 2, 6, requires_grad=True), torch.randn(4, 2, 2, 6)
    glob, local = VICRegLLoss()(g1, g2, l1, l2, torch.rand(4, 2, 2, 2), torch.rand(4, 2, 2, 2))
    (glob + local).backward()
    assert g1.grad.abs().sum() > 0 and l1.grad.abs().sum() > 0
    with pytest.raises(GlcnetError, match="vicreg_weights"):
        VICRegLLoss((1.0, -1.0, 1.0))
    with pytest.raises(GlcnetError, match="vicregl_matches"):
        VICRegLLoss(matches=(0, 4))
