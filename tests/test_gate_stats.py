"""The gate's statistics on synthetic timing samples, and the exact counter comparison."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from diagnostics.gate.stats import (
    CounterSpec,
    _signed_rank_distribution,
    _u_distribution,
    compare_counters,
    compare_timings,
    hodges_lehmann_ci,
    hodges_lehmann_ratio,
    holm,
    holm_adjust,
    mann_whitney_u,
    paired_hodges_lehmann_ci,
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


def test_hodges_lehmann_and_its_ci_recover_a_known_ratio() -> None:
    rng = np.random.default_rng(0)
    base = rng.lognormal(np.log(0.4), 0.03, 30)
    head = 1.25 * rng.lognormal(np.log(0.4), 0.03, 30)
    ratio = hodges_lehmann_ratio(base, head)
    assert ratio == pytest.approx(1.25, rel=0.03)
    lo, hi = hodges_lehmann_ci(base, head)
    assert lo < ratio < hi and lo < 1.25 < hi and hi - lo < 0.1


def _coverage(ci, n: int, trials: int = 400) -> float:
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(trials):
        base = rng.lognormal(0.0, 0.1, n)
        head = (
            1.2 * rng.lognormal(0.0, 0.1, n)
            if ci is hodges_lehmann_ci
            else 1.2 * base * rng.lognormal(0, 0.1, n)
        )
        lo, hi = ci(base, head)
        hits += lo <= 1.2 <= hi
    return hits / trials


@pytest.mark.parametrize("ci", [paired_hodges_lehmann_ci, hodges_lehmann_ci])
def test_hl_confidence_intervals_cover_the_true_ratio_95pct_of_the_time(ci) -> None:
    # Distribution-free: coverage >= 95% (exact order statistics are conservative by a few %).
    assert 0.93 <= _coverage(ci, n=12) <= 0.995


def test_paired_ci_is_the_order_statistics_of_the_walsh_averages() -> None:
    r = np.array([0.05, 0.12, -0.02, 0.2, 0.08, 0.15, 0.1, 0.03, 0.18, 0.07])
    base = np.ones(r.size)
    head = np.exp(r)
    walsh = np.sort([(r[i] + r[j]) / 2 for i in range(r.size) for j in range(i, r.size)])
    # n = 10: P(W+ <= 8) = 0.0244 <= 0.025 < P(W+ <= 9): the 9th smallest and 9th largest of 55 averages.
    lo, hi = paired_hodges_lehmann_ci(base, head)
    assert np.log(lo) == pytest.approx(walsh[8]) and np.log(hi) == pytest.approx(walsh[-9])
    assert lo < paired_hodges_lehmann_ratio(base, head) < hi
    assert paired_hodges_lehmann_ci([1.0] * 4, [1.1] * 4) == (0.0, np.inf)  # too few rounds to bound it


def test_holm_adjustment_and_family_wise_decision() -> None:
    assert holm_adjust([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    # One clear regression among 20 benchmarks survives; a marginal p that would pass alone does not.
    clear = compare_timings("slow", *_samples(1.3, seed=1), alpha=0.05)
    marginal = compare_timings(
        "edge", [0.30, 0.31, 0.30, 0.29, 0.30], [0.40, 0.41, 0.42, 0.40, 0.39], alpha=0.05
    )
    assert marginal.verdict == "regression"  # p = 1/32 < 0.05 alone
    quiet = [compare_timings(f"b{i}", *_samples(1.0, seed=100 + i), alpha=0.05) for i in range(18)]
    adjusted = {c.name: c for c in holm([clear, marginal, *quiet])}
    assert adjusted["slow"].verdict == "regression" and adjusted["slow"].m_tests == 20
    assert adjusted["edge"].verdict == "unchanged" and adjusted["edge"].p_slower_raw == pytest.approx(1 / 32)
    assert all(adjusted[f"b{i}"].verdict == "unchanged" for i in range(18))


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
    assert (paired.ci_low, paired.ci_high) == paired_hodges_lehmann_ci(base, head)
    assert paired.ci_low < 1.2 < paired.ci_high


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
        "new": "new",
    }
    params = next(c for c in compare_counters(base, head) if c.name == "parameters")
    assert params.change == pytest.approx(1 / 56_324)


def test_counter_tolerance_direction_and_acceptance() -> None:
    specs = {
        "alloc": CounterSpec(tolerance=0.01, unit="bytes"),
        "peak": CounterSpec(tolerance=0.01, unit="bytes"),
        "params": CounterSpec(),
        "acc": CounterSpec(higher_is_better=True),
    }
    base = {"alloc": 231_772_961, "peak": 18_127_348, "params": 56_324, "acc": 0.8}
    head = {"alloc": 231_772_977, "peak": 30_000_000, "params": 112_708, "acc": 0.7}
    verdicts = {c.name: c.verdict for c in compare_counters(base, head, specs)}
    # +16 bytes of 231,772,961 is within 1%; +65% peak live bytes is not; accuracy dropping regresses.
    assert verdicts == {
        "alloc": "unchanged",
        "peak": "regression",
        "params": "regression",
        "acc": "regression",
    }
    accepted = {"params": (112_708.0, "wider encoder"), "peak": (20_000_000.0, "stale value")}
    by_name = {c.name: c for c in compare_counters(base, head, specs, accepted)}
    assert by_name["params"].verdict == "accepted" and by_name["params"].accepted_reason == "wider encoder"
    assert by_name["peak"].verdict == "regression"  # accepted a different value: still a regression
