"""Uncertainty of an accuracy: clustered standard error and confidence intervals.

Facts used (shared/specs/ray_stats_reports.md, "Statistics for accuracy"):

* lm-eval's stderr for one accuracy is sd(ddof=1)/√n — it treats questions as independent.
* Questions about one video are correlated, so we cluster by video:
  SE = √(C/(C−1) · Σ_c (Σ_{i∈c}(x_i − x̄))²) / n   with C clusters and n questions.
  With one question per cluster this equals sd(ddof=1)/√n exactly (tested).
* Wilson interval via ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from vamba_eval.records import Estimate

Z95 = 1.96  # the conventional rounded two-sided 95 % normal quantile (norm.ppf(0.975) = 1.95996…)


def clustered_stderr(x: np.ndarray, clusters: Sequence[str]) -> float:
    """Cluster-robust standard error of the mean of ``x`` (a proportion when x is 0/1).

    Returns NaN when there are no observations or fewer than two clusters (the C/(C−1)
    small-sample factor is undefined for C = 1).
    """
    values = np.asarray(x, dtype=float)
    n = values.size
    if n != len(clusters):
        raise ValueError(f"clustered_stderr: {n} values but {len(clusters)} cluster labels")
    if n == 0:
        return math.nan
    _, inverse = np.unique(np.asarray([str(c) for c in clusters], dtype=object), return_inverse=True)
    n_clusters = int(inverse.max()) + 1
    if n_clusters < 2:
        return math.nan
    residual_sums = np.bincount(inverse, weights=values - values.mean(), minlength=n_clusters)
    return math.sqrt(n_clusters / (n_clusters - 1) * float(np.sum(residual_sums**2))) / n


def wilson_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n, as proportions in [0, 1]."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("wilson_ci needs n >= 1")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_estimate(correct: list[bool], clusters: list[str]) -> Estimate:
    """Accuracy in percent with a video-clustered standard error and a 95 % interval.

    * ``value`` = 100 · k / n; ``None`` (with no stderr / interval) when n = 0.
    * ``stderr`` = 100 · clustered SE (clusters = videos); ``None`` when fewer than 2 clusters.
    * ``ci95``: with ≥ 2 clusters, value ± 1.96 · stderr clipped to [0, 100] — a Wald interval
      on the clustered SE, so the interval reflects the correlation of questions within a video
      (a Wilson interval would assume independent questions and be too narrow on LVBench's
      ~15 questions per video). With < 2 clusters no clustered SE exists, so we fall back to the
      Wilson interval (×100), which also behaves at k = 0 or k = n. The Wald interval would
      degenerate to [100, 100] / [0, 0] when every answer is right / wrong (zero variance), so
      there too the Wilson interval is reported: no interval claims certainty from 20 questions.
    """
    if len(correct) != len(clusters):
        raise ValueError(f"accuracy_estimate: {len(correct)} outcomes but {len(clusters)} cluster labels")
    n = len(correct)
    n_clusters = len({str(c) for c in clusters})
    k = int(sum(bool(c) for c in correct))
    if n == 0:
        return Estimate(value=None, correct=0, n=0, stderr=None, ci95=None, n_clusters=0)
    value = 100.0 * k / n
    stderr: Optional[float] = None
    if n_clusters >= 2 and 0 < k < n:
        stderr = 100.0 * clustered_stderr(np.asarray(correct, dtype=float), clusters)
        half = Z95 * stderr
        ci = [max(0.0, value - half), min(100.0, value + half)]
    else:
        if n_clusters >= 2:
            stderr = 0.0
        low, high = wilson_ci(k, n)
        ci = [100.0 * low, 100.0 * high]
    return Estimate(value=value, correct=k, n=n, stderr=stderr, ci95=ci, n_clusters=n_clusters)
