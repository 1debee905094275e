"""Paired comparison of two runs on the same questions (shared/specs/ray_stats_reports.md, "Statistics").

* b = baseline right & candidate wrong, c = baseline wrong & candidate right (the discordant pairs).
  Exact McNemar p = ``scipy.stats.binomtest(b, b + c, 0.5).pvalue``; with b + c = 0 the runs agree on
  every question and p = 1 (binomtest rejects n = 0).
* Δ = accuracy(candidate) − accuracy(baseline) in percentage points = 100 · (c − b) / n.
* Its 95 % interval is a paired bootstrap that resamples whole VIDEOS (questions of one video are
  correlated): draw C of the C videos with replacement, Δ* = Σ_chosen (c_v − b_v) / Σ_chosen n_v,
  percentile interval. Seeded, so a CI log is reproducible.
* Several tasks: Holm's step-down adjustment of the McNemar p-values (family-wise error ≤ α).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

N_BOOT = 2000


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value on the discordant counts; 1.0 when there is no discordant pair."""
    from scipy.stats import binomtest

    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0 (got b={b}, c={c})")
    if b + c == 0:
        return 1.0
    return float(binomtest(int(b), int(b + c), 0.5).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (monotone, capped at 1)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


def task_seed(seed: int, name: str) -> np.random.Generator:
    """A generator per (seed, task) so adding a task does not change another task's interval."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


@dataclass(frozen=True)
class PairedOutcome:
    """Counts and estimates of one task's paired comparison."""

    n: int
    baseline_correct: int
    candidate_correct: int
    b: int  # baseline right, candidate wrong
    c: int  # baseline wrong, candidate right
    n_videos: int
    delta: Optional[float]  # percentage points; None when n == 0
    ci95: Optional[tuple[float, float]]
    p_value: float

    @property
    def baseline_acc(self) -> Optional[float]:
        return 100.0 * self.baseline_correct / self.n if self.n else None

    @property
    def candidate_acc(self) -> Optional[float]:
        return 100.0 * self.candidate_correct / self.n if self.n else None


def cluster_bootstrap_delta(base: np.ndarray, cand: np.ndarray, clusters: Sequence[str], rng: np.random.Generator,
                            n_boot: int = N_BOOT) -> tuple[float, float]:
    """Percentile 95 % interval (points) of mean(cand − base), resampling whole clusters (videos)."""
    diff = np.asarray(cand, dtype=float) - np.asarray(base, dtype=float)
    if diff.size == 0:
        raise ValueError("cluster_bootstrap_delta needs at least one pair")
    if not diff.any():
        return (0.0, 0.0)  # every pair agrees: every resample gives 0 (scipy's BCa would return NaN)
    _, inverse = np.unique(np.asarray([str(c) for c in clusters], dtype=object), return_inverse=True)
    n_clusters = int(inverse.max()) + 1
    d_sum = np.bincount(inverse, weights=diff, minlength=n_clusters)
    n_per = np.bincount(inverse, minlength=n_clusters).astype(float)
    deltas = np.empty(n_boot)
    step = max(1, 2_000_000 // n_clusters)  # bounded memory: at most ~2M drawn indices at a time
    for start in range(0, n_boot, step):
        idx = rng.integers(0, n_clusters, size=(min(step, n_boot - start), n_clusters))
        deltas[start:start + len(idx)] = 100.0 * d_sum[idx].sum(axis=1) / n_per[idx].sum(axis=1)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return (float(low), float(high))


def paired_outcome(base: Sequence[bool], cand: Sequence[bool], clusters: Sequence[str], rng: np.random.Generator,
                   n_boot: int = N_BOOT) -> PairedOutcome:
    """McNemar + video bootstrap for aligned verdict lists (same questions, same order)."""
    if not (len(base) == len(cand) == len(clusters)):
        raise ValueError(f"paired_outcome: {len(base)} baseline, {len(cand)} candidate verdicts, {len(clusters)} clusters")
    x = np.asarray(base, dtype=bool)
    y = np.asarray(cand, dtype=bool)
    n = int(x.size)
    b = int(np.sum(x & ~y))
    c = int(np.sum(~x & y))
    delta = 100.0 * (c - b) / n if n else None
    ci = cluster_bootstrap_delta(x, y, clusters, rng, n_boot) if n else None
    return PairedOutcome(n=n, baseline_correct=int(x.sum()), candidate_correct=int(y.sum()), b=b, c=c,
                         n_videos=len({str(v) for v in clusters}), delta=delta, ci95=ci, p_value=mcnemar_exact(b, c))
