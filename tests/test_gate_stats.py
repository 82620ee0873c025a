"""The gate's statistics on synthetic timing samples, and the exact counter comparison."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from diagnostics.gate.stats import (
    _signed_rank_distribution,
    _u_distribution,
    bootstrap_paired_ratio_ci,
    bootstrap_ratio_ci,
    compare_counters,
    compare_timings,
    hodges_lehmann_ratio,
    mann_whitney_u,
    paired_hodges_lehmann_ratio,
    wilcoxon_signed_rank,
)


def _brute_force_p(x: list[float], y: list[float]) -> float:
    """P(U >= U_obs) by enumerating every assignment of the pooled values to the two groups."""
    pooled = x + y
    n1 = len(x)
    observed = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), n1):
        xs = [pooled[i] for i in idx]
        ys = [pooled[i] for i in range(len(pooled)) if i not in idx]
        u = sum((a > b) + 0.5 * (a == b) for a in xs for b in ys)
        hits += u >= observed - 1e-12
        total += 1
    return hits / total


@pytest.mark.parametrize(("n1", "n2"), [(1, 1), (3, 4), (5, 5), (12, 15)])
def test_u_distribution_is_a_distribution(n1: int, n2: int) -> None:
    counts = _u_distribution(n1, n2)
    assert len(counts) == n1 * n2 + 1
    assert sum(counts) == math.comb(n1 + n2, n1)
    assert counts == counts[::-1]  # symmetric under H0
    assert min(counts) >= 1


def test_exact_p_value_matches_enumeration() -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        x = list(rng.normal(1.0, 1.0, 5))
        y = list(rng.normal(0.0, 1.0, 4))
        result = mann_whitney_u(x, y, "greater")
        assert result.exact
        assert result.p_value == pytest.approx(_brute_force_p(x, y))


def test_extreme_separation_p_value() -> None:
    result = mann_whitney_u([4, 5, 6], [1, 2, 3], "greater")
    assert result.u == 9 and result.p_value == pytest.approx(1 / 20)
    assert mann_whitney_u([4, 5, 6], [1, 2, 3], "less").p_value == pytest.approx(1.0)


def test_ties_use_the_normal_approximation() -> None:
    x = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0]
    y = [1.0, 1.0, 2.0, 2.0, 3.0, 1.0, 0.5]
    result = mann_whitney_u(x, y, "greater")
    assert not result.exact
    assert 0 < result.p_value < 0.1
    assert mann_whitney_u([2.0] * 5, [2.0] * 5).p_value == 1.0


def test_hodges_lehmann_and_bootstrap_recover_a_known_ratio() -> None:
    rng = np.random.default_rng(0)
    base = rng.lognormal(np.log(0.4), 0.03, 30)
    head = 1.25 * rng.lognormal(np.log(0.4), 0.03, 30)
    assert hodges_lehmann_ratio(base, head) == pytest.approx(1.25, rel=0.03)
    lo, hi = bootstrap_ratio_ci(base, head)
    assert lo < 1.25 < hi and hi - lo < 0.1
    assert bootstrap_ratio_ci(base, head) == (lo, hi)  # seeded: reproducible


def _brute_force_signed_rank_p(d: list[float]) -> float:
    """P(W+ >= observed) over all 2^n sign flips of |d| (no ties, no zeros)."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    observed = ranks[np.asarray(d) > 0].sum()
    hits = sum(
        ranks[np.asarray(signs, dtype=bool)].sum() >= observed
        for signs in itertools.product([0, 1], repeat=len(d))
    )
    return hits / 2 ** len(d)


@pytest.mark.parametrize("n", [1, 4, 10, 15])
def test_signed_rank_distribution(n: int) -> None:
    counts = _signed_rank_distribution(n)
    assert len(counts) == n * (n + 1) // 2 + 1 and sum(counts) == 2**n and counts == counts[::-1]


def test_wilcoxon_exact_p_value_matches_enumeration() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        d = list(rng.normal(0.3, 1.0, 9))
        result = wilcoxon_signed_rank(d, "greater")
        assert result.exact
        assert result.p_value == pytest.approx(_brute_force_signed_rank_p(d))
    all_up = wilcoxon_signed_rank([0.1 * k for k in range(1, 16)], "greater")
    assert all_up.p_value == pytest.approx(2.0**-15)
    assert wilcoxon_signed_rank([0.0, 0.0], "greater").p_value == 1.0
    tied = wilcoxon_signed_rank([0.1, 0.1, 0.2, 0.2, -0.05, 0.3, 0.3, 0.4], "greater")
    assert not tied.exact and 0 < tied.p_value < 0.05


def _samples(
    ratio: float, seed: int, n: int = 15, cv: float = 0.05, drift: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-round seconds of an interleaved run: a shared per-round load factor (``drift``, lognormal
    sigma) times independent per-run noise (``cv``)."""
    rng = np.random.default_rng(seed)
    load = rng.lognormal(0.0, drift, n) if drift else np.ones(n)
    base = 0.36 * load * rng.lognormal(0.0, cv, n)
    head = 0.36 * ratio * load * rng.lognormal(0.0, cv, n)
    return base, head


@pytest.mark.parametrize("paired", [True, False])
def test_clear_regression_is_flagged(paired: bool) -> None:
    base, head = _samples(1.3, seed=1)
    result = compare_timings("epoch", base, head, factor=1.10, paired=paired)
    assert result.verdict == "regression"
    assert result.p_slower < 1e-4 and result.ratio > 1.2
    assert result.ci_low > 1.1


def test_pairing_sees_a_20pct_slowdown_through_heavy_load_drift() -> None:
    # Load varies 30% between rounds (a busy shared machine) but hits A and B of one round alike.
    base, head = _samples(1.2, seed=7, cv=0.04, drift=0.3)
    paired = compare_timings("epoch", base, head, factor=1.10, paired=True)
    unpaired = compare_timings("epoch", base, head, factor=1.10, paired=False)
    assert paired.verdict == "regression"
    assert paired.ratio == pytest.approx(1.2, rel=0.05)
    assert unpaired.p_slower > paired.p_slower  # the drift swamps the unpaired test
    assert paired_hodges_lehmann_ratio(base, head) == paired.ratio
    lo, hi = bootstrap_paired_ratio_ci(base, head)
    assert lo < 1.2 < hi


@pytest.mark.parametrize("paired", [True, False])
def test_clear_improvement_is_not_a_regression(paired: bool) -> None:
    base, head = _samples(0.7, seed=2)
    result = compare_timings("epoch", base, head, factor=1.10, paired=paired)
    assert result.verdict == "improvement"
    assert result.p_faster < 1e-4 and result.p_slower > 0.99


@pytest.mark.parametrize("paired", [True, False])
def test_pure_noise_is_unchanged_with_few_false_alarms(paired: bool) -> None:
    verdicts = [
        compare_timings("epoch", *_samples(1.0, seed=s, cv=0.1, drift=0.2), paired=paired).verdict
        for s in range(40)
    ]
    assert verdicts.count("regression") == 0
    assert verdicts.count("unchanged") >= 38


def test_significant_but_small_slowdown_stays_below_factor() -> None:
    # 3% slower, measured precisely: significant, but below the 10% factor -> not a regression.
    base, head = _samples(1.03, seed=4, n=40, cv=0.005)
    result = compare_timings("epoch", base, head, factor=1.10)
    assert result.p_slower < 0.01
    assert result.verdict == "unchanged"


def test_large_but_insignificant_ratio_is_not_a_regression() -> None:
    # Three paired rounds cannot reach p < 0.01 (the smallest exact p is 1/8).
    result = compare_timings("epoch", [0.3, 0.31, 0.3], [0.6, 0.62, 0.61], factor=1.10, alpha=0.01)
    assert result.ratio > 1.9 and result.p_slower == pytest.approx(1 / 8)
    assert result.verdict == "unchanged"


def test_compare_timings_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        compare_timings("x", [0.1, 0.2], [0.1, 0.2], factor=1.0)
    with pytest.raises(ValueError):
        compare_timings("x", [0.1], [0.1, 0.2])
    with pytest.raises(ValueError):
        compare_timings("x", [0.1, -0.2], [0.1, 0.2])
    with pytest.raises(ValueError):  # paired rounds need equal counts
        compare_timings("x", [0.1, 0.2, 0.3], [0.1, 0.2])


def test_counters_compare_exactly() -> None:
    base = {"parameters": 56_324, "flops_per_epoch": 10_000, "alloc_bytes_per_epoch": 5_000, "gone": 1}
    head = {"parameters": 56_325, "flops_per_epoch": 10_000, "alloc_bytes_per_epoch": 4_999, "new": 7}
    verdicts = {c.name: c.verdict for c in compare_counters(base, head)}
    assert verdicts == {
        "parameters": "regression",  # +1 parameter is already a regression: no tolerance
        "flops_per_epoch": "unchanged",
        "alloc_bytes_per_epoch": "improvement",
        "gone": "missing",
        "new": "unchanged",
    }
    params = next(c for c in compare_counters(base, head) if c.name == "parameters")
    assert params.change == pytest.approx(1 / 56_324)
