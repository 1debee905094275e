"""Accuracy intervals: clustered Wald in general, Wilson where the Wald interval degenerates."""

from __future__ import annotations

import pytest

from vamba_eval.stats import accuracy_estimate, wilson_ci


@pytest.mark.parametrize("value", [True, False])
def test_all_equal_outcomes_get_a_wilson_interval(value):
    est = accuracy_estimate([value] * 20, [f"v{i % 4}" for i in range(20)])
    low, high = wilson_ci(20 if value else 0, 20)
    assert est.ci95 == pytest.approx([100 * low, 100 * high])
    assert est.stderr == 0.0 and est.ci95[1] - est.ci95[0] > 10


def test_mixed_outcomes_use_the_clustered_interval():
    correct = [True, True, False, False, True, False, True, True]
    est = accuracy_estimate(correct, ["a", "a", "b", "b", "c", "c", "d", "d"])
    assert est.value == 62.5 and est.stderr > 0
    assert est.ci95 == pytest.approx([max(0, 62.5 - 1.96 * est.stderr), min(100, 62.5 + 1.96 * est.stderr)])
