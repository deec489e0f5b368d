"""Paired comparison of two methods over seeds: mean difference and its 95% confidence interval.

Cells of the same seed and label fraction are paired: they share the labelled subset, the
fine-tuning crops and order, and the initialisation of every part that is not loaded
(``glcnet finetune`` seeds everything with the cell's seed before building the network),
so the difference removes most of the seed-to-seed spread that both methods share.
For the ``n`` seeds where both cells finished, ``d_s = x_s(method) - x_s(baseline)``::

    mean = 1/n sum_s d_s,   sd = sqrt(sum_s (d_s - mean)^2 / (n - 1))
    95% CI = mean -+ t_{0.975, n-1} sd / sqrt(n)     (Student's t; undefined for n < 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
