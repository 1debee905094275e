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


# --------------------------------------------------------------------------- mean scores (appended for
# graded tasks such as MLVU's generation tasks, and for macro averages such as MLVU's M-Avg)


def mean_estimate(values: Sequence[float], clusters: Sequence[str]) -> Estimate:
    """Mean of graded scores (no percent scaling) with a video-clustered standard error.

    * ``value`` = arithmetic mean; ``None`` (no stderr / interval) when there are no values.
    * ``stderr`` = ``clustered_stderr`` (clusters = videos); ``None`` with fewer than 2 clusters.
    * ``ci95`` = value ± 1.96 · stderr (Wald on the clustered SE; not clipped — the caller knows
      the score's range); ``None`` when there is no stderr.
    * ``correct`` is None: a mean score is not "k of n".
    """
    if len(values) != len(clusters):
        raise ValueError(f"mean_estimate: {len(values)} values but {len(clusters)} cluster labels")
    n = len(values)
    n_clusters = len({str(c) for c in clusters})
    if n == 0:
        return Estimate(value=None, correct=None, n=0, stderr=None, ci95=None, n_clusters=0)
    x = np.asarray(values, dtype=float)
    value = float(x.mean())
    if n_clusters < 2:
        return Estimate(value=value, correct=None, n=n, stderr=None, ci95=None, n_clusters=n_clusters)
    stderr = clustered_stderr(x, [str(c) for c in clusters])
    return Estimate(value=value, correct=None, n=n, stderr=stderr,
                    ci95=[value - Z95 * stderr, value + Z95 * stderr], n_clusters=n_clusters)


def macro_estimate(parts: Sequence[Estimate], divisor: Optional[int] = None,
                   bounds: Optional[tuple[float, float]] = None) -> Estimate:
    """Unweighted mean of the parts' values (e.g. MLVU's M-Avg over per-task accuracies).

    Parts whose ``value`` is None are left out; ``divisor`` (default: the number of parts with a
    value) lets a caller reproduce a rule that divides by a fixed number of parts, absent ones
    counting 0. The parts are treated as independent (disjoint videos), so
    ``stderr = √(Σ stderr_p²) / divisor`` — None when any used part has no stderr.
    ``ci95`` = value ± 1.96 · stderr, clipped to ``bounds`` when given; None when stderr is 0. ``n`` and ``n_clusters``
    are summed; ``correct`` is None (a macro mean is not "k of n").
    """
    used = [p for p in parts if p.value is not None]
    k = divisor if divisor is not None else len(used)
    n = sum(p.n for p in parts)
    n_clusters = sum(p.n_clusters for p in parts)
    if k <= 0 or not used:
        return Estimate(value=None, correct=None, n=n, stderr=None, ci95=None, n_clusters=n_clusters)
    value = sum(float(p.value) for p in used) / k
    if any(p.stderr is None for p in used):
        return Estimate(value=value, correct=None, n=n, stderr=None, ci95=None, n_clusters=n_clusters)
    stderr = math.sqrt(sum(float(p.stderr) ** 2 for p in used)) / k
    if stderr == 0.0:  # every part all-right / all-wrong: no interval that claims certainty
        return Estimate(value=value, correct=None, n=n, stderr=stderr, ci95=None, n_clusters=n_clusters)
    low, high = value - Z95 * stderr, value + Z95 * stderr
    if bounds is not None:
        low, high = max(bounds[0], low), min(bounds[1], high)
    return Estimate(value=value, correct=None, n=n, stderr=stderr, ci95=[low, high], n_clusters=n_clusters)
