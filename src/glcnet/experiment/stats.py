"""Paired comparison of two methods over seeds: mean difference and its 95% confidence interval.

Cells of the same seed and label fraction are paired: they share the labelled subset, the
fine-tuning crops and order, and the initialisation of every part that is not loaded
(``glcnet finetune`` seeds everything with the cell's seed before building the network),
so the difference removes most of the seed-to-seed spread that both methods share.
For the ``n`` seeds where both cells finished, ``d_s = x_s(method) - x_s(baseline)``::

    mean = 1/n sum_s d_s,   sd = sqrt(sum_s (d_s - mean)^2 / (n - 1))
    95% CI = mean -+ t_{0.975, n-1} sd / sqrt(n)     (Student's t; undefined for n < 2)

With several pretraining seeds ``p`` (``pretrain_seeds``), the differences ``d_ps`` of a
method against a baseline form a crossed design (every pretraining fine-tuned on every
labelled subset): ``d_ps = mu + a_p + b_s + e_ps``, ``a`` the pretraining's effect, ``b`` the
subset's, random. The mean over the ``P x S`` complete cells estimates ``mu`` with
variance ``s_a^2 / P + s_b^2 / S + s_e^2 / (P S)``, estimated from the two-way ANOVA mean
squares ``MS_P`` (df ``P - 1``), ``MS_S`` (``S - 1``) and ``MS_E`` (``(P - 1)(S - 1)``) as
``s_a^2 = max(0, (MS_P - MS_E) / S)``, ``s_b^2 = max(0, (MS_S - MS_E) / P)``, ``s_e^2 = MS_E``;
the interval is ``mean -+ t_{0.975, nu} sqrt(V)`` with Satterthwaite's ``nu`` for the sum of
the three terms (:func:`crossed_difference`). With two pretraining seeds ``s_a^2`` has one
degree of freedom, so the interval is wide when the pretrainings disagree: that is the
pretraining variance a single pretraining leaves out. With ``P = 1`` it is the paired t-interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass
class Paired:
    """Mean of ``n`` paired differences, their sample std and 95% interval."""

    n: int
    mean: float
    sd: float
    low: float  # 95% interval; nan when n < 2
    high: float


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (scipy)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired_difference(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Paired:
    """Mean of ``x_s - y_s`` over pairs, with its two-sided ``level`` t-interval (module doc)."""
    if len(x) != len(y):
        raise ValueError(f"paired samples of different lengths: {len(x)} and {len(y)}")
    d = [a - b for a, b in zip(x, y)]
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(d) / n
    if n < 2:
        return Paired(1, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Paired(n, mean, sd, mean - half, mean + half)


def crossed_difference(d: Mapping[tuple[int, int], float], level: float = 0.95) -> Paired:
    """Mean of ``d[(p, s)]`` over a complete grid of pretraining seeds ``p`` x subsets ``s`` and its
    interval with both variances (module doc); ``n`` = the number of cells. Subsets missing for
    some pretraining are left out (the grid must be complete); one pretraining: :func:`paired_difference`."""
    ps = sorted({p for p, _ in d})
    ss = sorted(s for s in {s for _, s in d} if all((p, s) in d for p in ps))
    if len(ps) <= 1 or not ss:
        xs = [d[(p, s)] for p in ps for s in ss]
        return paired_difference(xs, [0.0] * len(xs), level)
    big_p, big_s = len(ps), len(ss)
    x = [[d[(p, s)] for s in ss] for p in ps]  # [P][S]
    mean = sum(map(sum, x)) / (big_p * big_s)
    row = [sum(r) / big_s for r in x]
    col = [sum(x[i][j] for i in range(big_p)) / big_p for j in range(big_s)]
    ms_p = big_s * sum((r - mean) ** 2 for r in row) / (big_p - 1)
    if big_s < 2:  # one subset: only the pretrainings vary
        sd = math.sqrt(ms_p / big_s)
        half = t_quantile(0.5 + level / 2, big_p - 1) * sd / math.sqrt(big_p)
        return Paired(big_p, mean, sd, mean - half, mean + half)
    ms_s = big_p * sum((c - mean) ** 2 for c in col) / (big_s - 1)
    df_e = (big_p - 1) * (big_s - 1)
    ms_e = sum((x[i][j] - row[i] - col[j] + mean) ** 2 for i in range(big_p) for j in range(big_s)) / df_e
    # V = c (k_p MS_P + k_s MS_S + k_e MS_E), c = 1 / (P S): a component clipped at 0 drops its terms
    k_p, k_s = float(ms_p > ms_e), float(ms_s > ms_e)
    coef = [(k_p * ms_p, big_p - 1), (k_s * ms_s, big_s - 1), ((1 - k_p - k_s) * ms_e, df_e)]
    var = sum(m for m, _ in coef) / (big_p * big_s)
    if var <= 0:
        return Paired(big_p * big_s, mean, 0.0, mean, mean)
    nu = sum(m for m, _ in coef) ** 2 / sum(m ** 2 / df for m, df in coef if m)  # Satterthwaite
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, nu)) * math.sqrt(var)
    return Paired(big_p * big_s, mean, math.sqrt(var * big_p * big_s), mean - half, mean + half)
