"""Which ``budget`` of ``N`` candidate tiles to label, from their embeddings ``x [N, D]`` (L2-normalised).

Every strategy returns indices into ``x`` in the order to label them (the most useful first)
and is deterministic given ``seed``:

- ``random``: a seeded permutation (what ``prepare``'s subsets are).
- ``kcenter``: greedy k-center / core-set (Sener & Savarese, ICLR 2018): start at the point
  nearest the mean, then repeatedly take the point farthest from everything chosen,
  ``argmax_i min_j ||x_i - x_j||``. Covers the feature space, outliers included.
- ``typiclust`` (Hacohen et al., ICML 2022, "Active learning on a budget"): k-means into
  ``budget`` clusters; in each, the most *typical* point, typicality ``t(x) = 1 / mean_k ||x -
  nn_k(x)||`` over its ``k = min(20, cluster size - 1)`` nearest neighbours in the cluster; the
  clusters are taken largest first. Typical and diverse: what works at very small budgets, where
  uncertainty and outlier-seeking choices fail.
- ``probcover`` (Yehuda et al., NeurIPS 2022): points are balls of radius ``delta``, the largest
  at which 95% of the balls are *pure* (hold points of one k-means cluster, ``budget`` clusters:
  the paper's rule, searched over the 1st..50th percentiles of the pairwise distances); greedily
  take the point whose ball covers most not-yet-covered points.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from glcnet.errors import GlcnetError


def _distances(x: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances ``[N, N]`` (float32; N of a few thousand)."""
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    return np.sqrt(d2, dtype=np.float32)


def random_pick(x: np.ndarray, budget: int, seed: int) -> list[int]:
    """``budget`` indices of a seeded permutation."""
    return [int(i) for i in np.random.default_rng(seed).permutation(len(x))[:budget]]


def kcenter(x: np.ndarray, budget: int, seed: int) -> list[int]:
    """Greedy k-center (module doc); ``seed`` breaks exact ties only."""
    first = int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))
    chosen = [first]
    gap = np.sqrt(((x - x[first]) ** 2).sum(1))  # distance of every point to the chosen set
    for _ in range(budget - 1):
        i = int(np.argmax(gap))
        chosen.append(i)
        gap = np.minimum(gap, np.sqrt(((x - x[i]) ** 2).sum(1)))
    return chosen


def typiclust(x: np.ndarray, budget: int, seed: int) -> list[int]:
    """TypiClust (module doc)."""
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=budget, n_init=3, random_state=seed).fit_predict(x)
    sizes = np.bincount(labels, minlength=budget)
    picks = []
    for c in np.argsort(-sizes, kind="stable"):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        if len(members) == 1:
            picks.append(int(members[0]))
            continue
        k = min(20, len(members) - 1)
        d = _distances(x[members])
        knn = np.sort(d, axis=1)[:, 1:k + 1]  # [m, k], self excluded
        picks.append(int(members[np.argmax(1.0 / (knn.mean(1) + 1e-12))]))
    return picks[:budget]


def probcover(x: np.ndarray, budget: int, seed: int) -> list[int]:
    """ProbCover's greedy ball cover (module doc)."""
    from sklearn.cluster import KMeans

    d = _distances(x)
    labels = KMeans(n_clusters=budget, n_init=3, random_state=seed).fit_predict(x)
    same = labels[:, None] == labels[None, :]
    delta = 0.0
    for q in np.linspace(1, 50, 25):
        cand = float(np.percentile(d, q))
        balls = d <= cand
        if ((balls & ~same).any(1)).mean() > 0.05:  # more than 5% of the balls hold another cluster's points
            break
        delta = cand
    balls = d <= delta  # [N, N]: j in the ball of i
    covered = np.zeros(len(x), dtype=bool)
    chosen: list[int] = []
    rng = np.random.default_rng(seed)
    for _ in range(budget):
        gain = (balls & ~covered[None, :]).sum(1).astype(np.float64)
        gain[chosen] = -1
        if gain.max() <= 0:  # everything covered: the rest at random
            rest = [i for i in rng.permutation(len(x)) if i not in chosen]
            chosen += [int(i) for i in rest[:budget - len(chosen)]]
            break
        i = int(np.argmax(gain))
        chosen.append(i)
        covered |= balls[i]
    return chosen


STRATEGIES: dict[str, Callable[[np.ndarray, int, int], list[int]]] = {
    "random": random_pick, "kcenter": kcenter, "typiclust": typiclust, "probcover": probcover}


def select(x: np.ndarray, budget: int, strategy: str, seed: int = 0) -> list[int]:
    """``budget`` distinct indices of ``x`` chosen by ``strategy`` (module doc), in labelling order."""
    if strategy not in STRATEGIES:
        raise GlcnetError(f"select: unknown strategy {strategy!r} (valid: {', '.join(STRATEGIES)})")
    if not 1 <= budget <= len(x):
        raise GlcnetError(f"select: a budget of {budget} tiles out of {len(x)} candidates")
    out = STRATEGIES[strategy](np.ascontiguousarray(x, dtype=np.float32), budget, seed)
    assert len(out) == budget and len(set(out)) == budget, (strategy, out)
    return out
