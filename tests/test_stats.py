"""Intervals of paired differences with several pretrainings (the crossed design of glcnet.experiment.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from glcnet.experiment.stats import crossed_difference, paired_difference


def test_one_pretraining_is_the_paired_t_interval():
    d = {(0, s): v for s, v in enumerate([0.1, 0.3, -0.2, 0.4, 0.0])}
    c, p = crossed_difference(d), paired_difference(list(d.values()), [0.0] * 5)
    assert (c.n, c.mean, c.low, c.high) == (p.n, p.mean, p.low, p.high)


def test_two_way_anova_by_hand():
    """x_ps = mu + a_p + b_s + e_ps on a 2 x 3 grid, the mean squares written out."""
    x = np.array([[1.0, 2.0, 4.0], [2.0, 4.0, 5.0]])
    d = {(p, s): x[p, s] for p in range(2) for s in range(3)}
    m, row, col = x.mean(), x.mean(1), x.mean(0)
    ms_p = 3 * ((row - m) ** 2).sum() / 1
    ms_s = 2 * ((col - m) ** 2).sum() / 2
    ms_e = ((x - row[:, None] - col[None, :] + m) ** 2).sum() / 2
    assert ms_p > ms_e and ms_s > ms_e
    v = (ms_p + ms_s - ms_e) / 6
    nu = (ms_p + ms_s - ms_e) ** 2 / (ms_p ** 2 / 1 + ms_s ** 2 / 2 + ms_e ** 2 / 2)
    from scipy.stats import t

    c = crossed_difference(d)
    assert c.n == 6 and c.mean == pytest.approx(m)
    assert c.high - c.mean == pytest.approx(t.ppf(0.975, nu) * math.sqrt(v))


def test_incomplete_subsets_are_left_out_and_pretraining_variance_widens_the_interval():
    rng = np.random.default_rng(1)
    b = rng.normal(0, 1, 10)
    same = {(p, s): b[s] + rng.normal(0, 0.1) for p in range(2) for s in range(10)}
    apart = {(p, s): v + (2.0 if p else -2.0) for (p, s), v in same.items()}
    assert crossed_difference(apart).high - crossed_difference(apart).low > \
        5 * (crossed_difference(same).high - crossed_difference(same).low)
    partial = dict(same)
    del partial[(1, 9)]
    assert crossed_difference(partial).n == 18  # subset 9 lacks pretraining 1: out for both


@pytest.mark.parametrize("sa,sb,se", [(2.0, 3.0, 1.0), (0.0, 3.0, 1.0), (0.0, 0.0, 1.0)])
def test_coverage_of_the_interval_in_simulation(sa, sb, se):
    """Two pretrainings x ten subsets from the random-effects model: the 95% interval holds the true
    mean in about 95% of 600 draws (Satterthwaite's degrees of freedom; with one degree of freedom for
    the pretrainings it can fall to ~90% when they dominate the variance, docs/results.md)."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(600):
        a, b, e = rng.normal(0, sa, 2), rng.normal(0, sb, 10), rng.normal(0, se, (2, 10))
        c = crossed_difference({(p, s): 1.0 + a[p] + b[s] + e[p, s] for p in range(2) for s in range(10)})
        hits += c.low <= 1.0 <= c.high
    assert 0.89 <= hits / 600 <= 0.995
