"""Judging a seed metric needs enough samples: a fresh network is "not enough data yet"
(verdict None), never a failure; one unit per metric wherever it is shown."""

from __future__ import annotations

from folders.metrics import MIN_SAMPLES, Metrics, format_metric, threshold_text


def _metrics(**kw) -> Metrics:
    base = dict(convergence=1.0, converged=2, concluded=2, conflict_rate=0.75, frames_total=4,
                frames_in_conflict=0, frames_invalid=0, frames_disagreeing=3, access_p95_ms=2.0,
                access_samples=2, routes_per_goal=1.0, min_routes=1, goals=2, routes=2)
    return Metrics(**{**base, **kw})


def test_too_few_samples_is_no_verdict_not_a_failure():
    fresh = _metrics()
    assert {n: fresh.verdict(n) for n in MIN_SAMPLES} == {
        "convergence": None, "conflict_rate": None, "access_p95_ms": True, "routes_per_goal": None}
    assert fresh.samples("conflict_rate") == (4, 20, "frames")
    assert fresh.meets()["conflict_rate"] is False, "meets() still compares the raw value"


def test_enough_samples_are_judged_and_unmeasured_is_still_no_verdict():
    settled = _metrics(concluded=10, converged=8, convergence=0.8, frames_total=20, conflict_rate=0.05,
                       goals=4, routes=12, routes_per_goal=3.0)
    assert {n: settled.verdict(n) for n in MIN_SAMPLES} == {
        "convergence": False, "conflict_rate": True, "access_p95_ms": True, "routes_per_goal": True}
    assert _metrics(access_p95_ms=None, access_samples=0).verdict("access_p95_ms") is None


def test_one_unit_per_metric():
    assert [format_metric(n, v) for n, v in (("convergence", 0.942), ("conflict_rate", 0.05),
                                             ("access_p95_ms", 3.21), ("routes_per_goal", 3.0))] == \
        ["94.2%", "5.0%", "3.2 ms", "3.0"]
    assert [threshold_text(n) for n in MIN_SAMPLES] == ["≥ 90.0%", "≤ 5.0%", "≤ 200.0 ms", "≥ 3.0"]
