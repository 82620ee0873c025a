"""Statistics for the benchmark gate, kept apart from the git/subprocess plumbing so they test alone.

A timing regression is decided from per-round samples of both revisions, never from one ratio of two
means. The gate runs the two revisions in alternating rounds (A B B A A B ...), so round i of base and
round i of head ran back to back under the same machine conditions: they are PAIRS. On a shared machine
the load drifts a lot between rounds (we saw the same round take 0.33 s and 0.8 s minutes apart) but
little within one, so the paired design removes most of the noise:

* one-sided Wilcoxon signed-rank test on the per-round log-ratios log(head_i / base_i) (exact null
  distribution without ties/zeros, normal approximation with tie correction otherwise) says whether
  head is *significantly* slower;
* the Hodges-Lehmann estimate of the ratio (exp of the median Walsh average of the log-ratios) says by
  *how much*, with the distribution-free confidence interval of that same estimate (order statistics
  of the Walsh averages at the signed-rank critical value);
* ``holm`` adjusts the p-values of all the benchmarks gated together (Holm's step-down), so the
  chance of any false alarm over the whole suite stays at alpha.

A regression needs both: (adjusted) ``p < alpha`` and ``ratio > factor``. Significance alone would flag 1% noise
from a long run; magnitude alone would flag one unlucky round. For unpaired samples (``paired=False``)
the same decision uses the Mann-Whitney U test and the two-sample Hodges-Lehmann ratio.

Pure numpy + stdlib (no scipy): exact null distributions are polynomial coefficients computed with
Python integers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

Alternative = Literal["greater", "less"]
Verdict = Literal["regression", "improvement", "unchanged"]

# Above this many (n1 * n2) pairs the exact distribution is still cheap, but the normal approximation is
# already accurate to the third decimal; the cap only bounds the polynomial size.
_EXACT_MAX_PAIRS = 10_000


@dataclass(frozen=True)
class TestResult:
    statistic: float  # U (Mann-Whitney) or W+ (Wilcoxon signed-rank)
    p_value: float
    exact: bool

    @property
    def u(self) -> float:
        return self.statistic


def _u_distribution(n1: int, n2: int) -> list[int]:
    """Counts of each U value 0..n1*n2 over all C(n1+n2, n1) rank arrangements (no ties).

    These are the coefficients of the Gaussian binomial [n1+n2 choose n1]_q
    = prod_{i=1..n1} (1 - q^(n2+i)) / (1 - q^i), multiplied out exactly with Python ints.
    """
    size = n1 * n2 + 1
    poly = [0] * size
    poly[0] = 1
    for i in range(1, n1 + 1):
        a = n2 + i
        # multiply by (1 - q^a), truncated: degrees above n1*n2 cancel in the final quotient
        for k in range(size - 1, a - 1, -1):
            poly[k] -= poly[k - a]
        # divide by (1 - q^i): c[k] = p[k] + c[k - i]  (exact polynomial division)
        for k in range(i, size):
            poly[k] += poly[k - i]
    return poly


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], alternative: Alternative = "greater"
) -> TestResult:
    """One-sided Mann-Whitney U test; ``alternative="greater"``: x tends to be larger than y."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    n1, n2 = xa.size, ya.size
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs two non-empty samples")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError("mann_whitney_u needs finite samples")
    diff = xa[:, None] - ya[None, :]
    u = float((diff > 0).sum() + 0.5 * (diff == 0).sum())
    u_alt = u if alternative == "greater" else n1 * n2 - u  # statistic whose large values favour H1

    pooled = np.concatenate([xa, ya])
    _, tie_counts = np.unique(pooled, return_counts=True)
    has_ties = bool((tie_counts > 1).any())
    if not has_ties and n1 * n2 <= _EXACT_MAX_PAIRS:
        counts = _u_distribution(n1, n2)
        total = math.comb(n1 + n2, n1)
        k = round(u_alt)  # integer when there are no ties
        p = sum(counts[k:]) / total
        return TestResult(statistic=u, p_value=float(min(1.0, p)), exact=True)

    n = n1 + n2
    mean = n1 * n2 / 2.0
    tie_term = float(((tie_counts**3) - tie_counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1)))
    if var <= 0:  # every value identical: no evidence either way
        return TestResult(statistic=u, p_value=1.0, exact=False)
    z = (u_alt - mean - 0.5) / math.sqrt(var)  # continuity correction towards the null
    p = 0.5 * math.erfc(z / math.sqrt(2.0))
    return TestResult(statistic=u, p_value=float(min(1.0, max(0.0, p))), exact=False)


def _signed_rank_distribution(n: int) -> list[int]:
    """Counts of each W+ value 0..n(n+1)/2 over the 2^n sign assignments: coefficients of prod (1 + q^k)."""
    size = n * (n + 1) // 2 + 1
    poly = [0] * size
    poly[0] = 1
    for k in range(1, n + 1):
        for w in range(size - 1, k - 1, -1):
            poly[w] += poly[w - k]
    return poly


def wilcoxon_signed_rank(d: Sequence[float], alternative: Alternative = "greater") -> TestResult:
    """One-sided Wilcoxon signed-rank test that the differences ``d`` are centred above (below) zero.

    Zero differences are dropped (Wilcoxon's convention); exact null distribution when the remaining
    |d| have no ties, normal approximation with tie and continuity correction otherwise.
    """
    da = np.asarray(d, dtype=np.float64)
    if da.size == 0 or not np.isfinite(da).all():
        raise ValueError("wilcoxon_signed_rank needs finite differences")
    da = da[da != 0]
    n = da.size
    if n == 0:
        return TestResult(statistic=0.0, p_value=1.0, exact=False)
    absd = np.abs(da)
    order = absd.argsort(kind="stable")
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.arange(1, n + 1)
    _, inverse, tie_counts = np.unique(absd, return_inverse=True, return_counts=True)
    if (tie_counts > 1).any():  # average ranks within ties
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / tie_counts)[inverse]
    w_plus = float(ranks[da > 0].sum())
    total = n * (n + 1) / 2.0
    w_alt = w_plus if alternative == "greater" else total - w_plus
    if not (tie_counts > 1).any() and n <= 60:
        counts = _signed_rank_distribution(n)
        k = round(w_alt)
        p = sum(counts[k:]) / 2**n
        return TestResult(statistic=w_plus, p_value=float(min(1.0, p)), exact=True)
    mean = total / 2.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float(((tie_counts**3) - tie_counts).sum()) / 48.0
    if var <= 0:
        return TestResult(statistic=w_plus, p_value=1.0, exact=False)
    z = (w_alt - mean - 0.5) / math.sqrt(var)
    p = 0.5 * math.erfc(z / math.sqrt(2.0))
    return TestResult(statistic=w_plus, p_value=float(min(1.0, max(0.0, p))), exact=False)


def paired_log_ratios(base: Sequence[float], head: Sequence[float]) -> np.ndarray:
    b = np.asarray(base, dtype=np.float64)
    h = np.asarray(head, dtype=np.float64)
    if b.shape != h.shape:
        raise ValueError(f"paired samples need equal lengths (base {b.size}, head {h.size})")
    return np.log(h) - np.log(b)


def paired_hodges_lehmann_ratio(base: Sequence[float], head: Sequence[float]) -> float:
    """exp(median of the Walsh averages (r_i + r_j) / 2, i <= j, of the per-round log-ratios r)."""
    r = paired_log_ratios(base, head)
    i, j = np.triu_indices(r.size)
    return float(np.exp(np.median((r[i] + r[j]) / 2.0)))


def _critical_count(counts: list[int], total: int, tail: float) -> int:
    """Largest c with P(S <= c - 1) <= tail for a statistic S with these exact null counts (0..len-1)."""
    acc, c = 0, 0
    for k, count in enumerate(counts):
        acc += count
        if acc / total > tail:
            break
        c = k + 1
    return c


def _order_stat_ci(values: np.ndarray, c: int) -> tuple[float, float]:
    """[v_(c), v_(M+1-c)] of the sorted values (1-based), or unbounded when c < 1 (too few samples)."""
    if c < 1:
        return -math.inf, math.inf
    v = np.sort(values)
    return float(v[c - 1]), float(v[v.size - c])


def paired_hodges_lehmann_ci(
    base: Sequence[float], head: Sequence[float], confidence: float = 0.95
) -> tuple[float, float]:
    """Distribution-free CI of the paired HL ratio: order statistics of the Walsh averages of the
    log-ratios at the signed-rank critical value (Tukey; Hollander & Wolfe 3.3). The interval belongs to
    the estimate shown beside it: the HL estimate is the median of the same Walsh averages.
    (0, inf) when the rounds are too few for this confidence (n <= 5 at 95%)."""
    r = paired_log_ratios(base, head)
    i, j = np.triu_indices(r.size)
    walsh = (r[i] + r[j]) / 2.0
    c = _critical_count(_signed_rank_distribution(r.size), 2**r.size, (1.0 - confidence) / 2.0)
    lo, hi = _order_stat_ci(walsh, c)
    return float(np.exp(lo)), float(np.exp(hi))


def _shift_ci(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float]:
    """Distribution-free CI of the two-sample HL shift of x over y: order statistics of all pairwise
    differences x_i - y_j at the Mann-Whitney critical value (Moses). Normal approximation of the critical
    value beyond ``_EXACT_MAX_PAIRS`` pairs."""
    diffs = (x[:, None] - y[None, :]).ravel()
    n1, n2 = x.size, y.size
    tail = (1.0 - confidence) / 2.0
    if n1 * n2 <= _EXACT_MAX_PAIRS:
        c = _critical_count(_u_distribution(n1, n2), math.comb(n1 + n2, n1), tail)
    else:
        z = math.sqrt(2.0) * _erfinv(1.0 - 2.0 * tail)
        c = math.floor(n1 * n2 / 2.0 - z * math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0))
    return _order_stat_ci(diffs, c)


def hodges_lehmann_ci(
    base: Sequence[float], head: Sequence[float], confidence: float = 0.95
) -> tuple[float, float]:
    """Distribution-free CI of the two-sample HL ratio: the shift CI of the log values (Moses)."""
    b = np.log(np.asarray(base, dtype=np.float64))
    h = np.log(np.asarray(head, dtype=np.float64))
    lo, hi = _shift_ci(h, b, confidence)
    return float(np.exp(lo)), float(np.exp(hi))


def _erfinv(y: float) -> float:
    """Inverse error function by bisection on math.erf (only called for a handful of values)."""
    lo, hi = -6.0, 6.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if math.erf(mid) < y else (lo, mid)
    return (lo + hi) / 2.0


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject H_i at family-wise level alpha iff adjusted p_i < alpha.
    Controls the chance of ANY false alarm across all the benchmarks gated at once, under any dependence."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return [float(x) for x in out]


def hodges_lehmann_ratio(base: Sequence[float], head: Sequence[float]) -> float:
    """Median of all pairwise ratios head_i / base_j (the HL shift estimate on the log scale)."""
    b = np.log(np.asarray(base, dtype=np.float64))
    h = np.log(np.asarray(head, dtype=np.float64))
    return float(np.exp(np.median(h[:, None] - b[None, :])))


@dataclass(frozen=True)
class TimingComparison:
    name: str
    n_base: int
    n_head: int
    base_median: float
    head_median: float
    ratio: float  # Hodges-Lehmann estimate of head / base
    ci_low: float  # distribution-free 95% CI of that same HL estimate (Walsh averages / pairwise ratios)
    ci_high: float
    p_slower: float  # one-sided test: head slower than base (Holm-adjusted once ``holm`` ran)
    p_faster: float  # one-sided test: head faster than base (Holm-adjusted once ``holm`` ran)
    factor: float
    alpha: float
    verdict: Verdict
    test: str = "wilcoxon-signed-rank (paired rounds)"
    unit: str = "s"  # of base_median / head_median: seconds per call, or bytes (peak RSS)
    p_slower_raw: float | None = None  # the unadjusted p-values, kept when adjusted
    p_faster_raw: float | None = None
    m_tests: int = 1  # how many benchmarks were tested together (Holm's family size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _decide(p_slower: float, p_faster: float, ratio: float, factor: float, alpha: float) -> Verdict:
    if p_slower < alpha and ratio > factor:
        return "regression"
    if p_faster < alpha and ratio < 1.0 / factor:
        return "improvement"
    return "unchanged"


def compare_timings(
    name: str,
    base: Sequence[float],
    head: Sequence[float],
    factor: float = 1.10,
    alpha: float = 0.01,
    paired: bool = True,
    unit: str = "s",
) -> TimingComparison:
    """Decide regression / improvement / unchanged for two samples of one benchmark (one test alone).

    regression  : head significantly slower (p < alpha) AND estimated ratio > factor
    improvement : head significantly faster AND estimated ratio < 1 / factor
    ``paired=True`` (the gate's interleaved rounds): Wilcoxon signed-rank on log(head_i / base_i), the
    paired HL ratio and its Walsh-average CI; ``paired=False``: Mann-Whitney U, the two-sample HL ratio
    and its pairwise-ratio CI. Several benchmarks at once: pass the results through ``holm``.
    """
    if factor <= 1.0:
        raise ValueError(f"factor must be > 1 (got {factor})")
    b = np.asarray(base, dtype=np.float64)
    h = np.asarray(head, dtype=np.float64)
    if b.size < 2 or h.size < 2:
        raise ValueError("compare_timings needs at least 2 samples per side")
    if (b <= 0).any() or (h <= 0).any() or not (np.isfinite(b).all() and np.isfinite(h).all()):
        raise ValueError("samples must be positive and finite")
    if paired:
        r = paired_log_ratios(b, h)
        slower = wilcoxon_signed_rank(r, "greater")
        faster = wilcoxon_signed_rank(r, "less")
        ratio = paired_hodges_lehmann_ratio(b, h)
        lo, hi = paired_hodges_lehmann_ci(b, h)
        test = "wilcoxon-signed-rank (paired rounds)"
    else:
        slower = mann_whitney_u(h, b, "greater")
        faster = mann_whitney_u(h, b, "less")
        ratio = hodges_lehmann_ratio(b, h)
        lo, hi = hodges_lehmann_ci(b, h)
        test = "mann-whitney-u"
    return TimingComparison(
        name=name,
        n_base=int(b.size),
        n_head=int(h.size),
        base_median=float(np.median(b)),
        head_median=float(np.median(h)),
        ratio=ratio,
        ci_low=lo,
        ci_high=hi,
        p_slower=slower.p_value,
        p_faster=faster.p_value,
        factor=factor,
        alpha=alpha,
        verdict=_decide(slower.p_value, faster.p_value, ratio, factor, alpha),
        test=test,
        unit=unit,
    )


def holm(comparisons: Sequence[TimingComparison]) -> list[TimingComparison]:
    """Re-decide every comparison with Holm-adjusted p-values (slower and faster each as one family),
    so gating twenty benchmarks keeps the chance of any false alarm at alpha, not ~20 alpha."""
    if not comparisons:
        return []
    slow = holm_adjust([c.p_slower if c.p_slower_raw is None else c.p_slower_raw for c in comparisons])
    fast = holm_adjust([c.p_faster if c.p_faster_raw is None else c.p_faster_raw for c in comparisons])
    out = []
    for c, ps, pf in zip(comparisons, slow, fast, strict=False):
        raw_s = c.p_slower if c.p_slower_raw is None else c.p_slower_raw
        raw_f = c.p_faster if c.p_faster_raw is None else c.p_faster_raw
        out.append(
            replace(
                c,
                p_slower=ps,
                p_faster=pf,
                p_slower_raw=raw_s,
                p_faster_raw=raw_f,
                m_tests=len(comparisons),
                verdict=_decide(ps, pf, c.ratio, c.factor, c.alpha),
            )
        )
    return out


CounterVerdict = Literal["regression", "improvement", "unchanged", "missing", "accepted", "new"]


@dataclass(frozen=True)
class CounterSpec:
    """How one counter is judged: relative tolerance and which direction is worse."""

    tolerance: float = 0.0  # |head/base - 1| <= tolerance counts as unchanged (0: exact)
    higher_is_better: bool = False  # accuracy: a drop regresses; bytes, FLOPs, parameters: a rise
    unit: str = ""


@dataclass(frozen=True)
class CounterComparison:
    name: str
    base: float | None
    head: float | None
    verdict: CounterVerdict
    tolerance: float = 0.0
    unit: str = ""
    higher_is_better: bool = False
    accepted_reason: str | None = None  # set when an entry of the acceptance file accepted head's value

    @property
    def change(self) -> float | None:
        if self.base is None or self.head is None or self.base == 0:
            return None
        return self.head / self.base - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "change": self.change}


def _counter_verdict(b: float, h: float, spec: CounterSpec) -> CounterVerdict:
    if h == b:
        return "unchanged"
    scale = abs(b) if b != 0 else 1.0
    if abs(h - b) <= spec.tolerance * scale:
        return "unchanged"
    worse = h < b if spec.higher_is_better else h > b
    return "regression" if worse else "improvement"


def compare_counters(
    base: dict[str, float],
    head: dict[str, float],
    specs: dict[str, CounterSpec] | None = None,
    accepted: dict[str, tuple[float, str]] | None = None,
) -> list[CounterComparison]:
    """Deterministic counters: a change beyond the counter's relative tolerance (default 0: exact) in
    its worse direction is a regression, unless ``accepted[name] == (head value, reason)`` accepts it
    (within the same tolerance), which turns it into "accepted".

    A counter the base has but the head lacks is "missing" (the gate fails closed on it); one only the
    head has is "new" (base=None).
    """
    specs = specs or {}
    accepted = accepted or {}
    out: list[CounterComparison] = []
    for name in sorted(set(base) | set(head)):
        b, h = base.get(name), head.get(name)
        spec = specs.get(name, CounterSpec())
        kw = {"tolerance": spec.tolerance, "unit": spec.unit, "higher_is_better": spec.higher_is_better}
        if h is None:
            out.append(CounterComparison(name, b, None, "missing", **kw))
        elif b is None:
            out.append(CounterComparison(name, None, h, "new", **kw))
        else:
            verdict = _counter_verdict(b, h, spec)
            reason = None
            if verdict == "regression" and name in accepted:
                value, why = accepted[name]
                if _counter_verdict(value, h, CounterSpec(spec.tolerance)) == "unchanged":
                    verdict, reason = "accepted", why
            out.append(CounterComparison(name, b, h, verdict, accepted_reason=reason, **kw))
    return out


# ----------------------------------------------------------------------------------------------
# Quality: two independent distributions of trained-model scores

QualityVerdict = Literal["regression", "improvement", "unchanged", "missing"]


@dataclass(frozen=True)
class QualityComparison:
    """Base and head as two independent samples of fresh-seed runs (never paired by seed: a change in
    how random numbers are drawn is a reseed, Jordan 2023). ``drop`` is how much worse head is (positive:
    worse): the Hodges-Lehmann shift, with its distribution-free 95% interval; ``p_worse`` is the one-sided
    Mann-Whitney test. ``mean_drop`` is the difference of the means, for the report.

    Why ranks, not Welch's t on the means: the runs' distribution has a heavy lower tail (about 4% of the
    default recipe's runs stop early near the majority share), so how many such runs land in 24 decides
    a mean's test; ranks judge where the runs lie, and a shift of the bulk is caught whatever the tail
    did (measured: README, "Quality sensitivity")."""

    name: str
    unit: str
    higher_is_better: bool
    threshold: float  # practical threshold: a drop must also exceed this to count
    base: dict[str, Any]  # summary of the base runs: mean, sd, ci, n, values
    head: dict[str, Any]
    drop: float
    drop_ci: tuple[float, float]
    p_worse: float
    p_better: float
    verdict: QualityVerdict
    p_adjusted: float | None = None
    mean_drop: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drop_ci"] = list(self.drop_ci)
        return d


def _summary(values: np.ndarray) -> dict[str, Any]:
    """One side's runs as the report shows them: mean, sd, 95% Student-t CI, n, every value."""
    from diagnostics.quality.summary import summarize

    s = summarize("", values.tolist())
    return {"mean": s.mean, "sd": s.sd, "ci": [s.ci_low, s.ci_high], "n": s.n, "values": list(s.values)}


def compare_quality(
    name: str,
    base: Sequence[float],
    head: Sequence[float],
    *,
    threshold: float = 0.0,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    unit: str = "",
) -> QualityComparison:
    """One-sided Mann-Whitney tests of head against base (each direction), and the Hodges-Lehmann drop
    with its 95% interval.

    The verdict here uses ``alpha`` unadjusted; ``holm_quality`` re-decides a family together."""
    b = np.asarray([v for v in base if math.isfinite(v)], dtype=np.float64)
    h = np.asarray([v for v in head if math.isfinite(v)], dtype=np.float64)
    sign = 1.0 if higher_is_better else -1.0
    drop, ci, p_worse, p_better, mean_drop = math.nan, (math.nan, math.nan), 1.0, 1.0, math.nan
    if b.size >= 2 and h.size >= 2:
        better_b, better_h = sign * b, sign * h  # larger is better on both
        drop = float(np.median(better_b[:, None] - better_h[None, :]))
        ci = _shift_ci(better_b, better_h, 0.95)
        p_worse = mann_whitney_u(better_b, better_h, "greater").p_value
        p_better = mann_whitney_u(better_b, better_h, "less").p_value
        mean_drop = float(better_b.mean() - better_h.mean())
    verdict = (
        _quality_verdict(drop, p_worse, p_better, threshold, alpha) if math.isfinite(drop) else "missing"
    )
    return QualityComparison(
        name,
        unit,
        higher_is_better,
        threshold,
        _summary(b),
        _summary(h),
        drop,
        ci,
        p_worse,
        p_better,
        verdict,
        mean_drop=mean_drop,
    )


def _quality_verdict(
    drop: float, p_worse: float, p_better: float, threshold: float, alpha: float
) -> QualityVerdict:
    if p_worse < alpha and drop > threshold:
        return "regression"
    if p_better < alpha and -drop > threshold:
        return "improvement"
    return "unchanged"


def holm_quality(comparisons: Sequence[QualityComparison], alpha: float) -> list[QualityComparison]:
    """Holm over the quality family's one-sided "head is worse" tests: the chance of any false alarm
    across all of them stays <= alpha. (An improvement is information, judged unadjusted.)"""
    judged = [i for i, c in enumerate(comparisons) if c.verdict != "missing"]
    adjusted = dict(zip(judged, holm_adjust([comparisons[i].p_worse for i in judged]), strict=True))
    out = []
    for i, c in enumerate(comparisons):
        if i not in adjusted:
            out.append(c)
            continue
        p = adjusted[i]
        out.append(
            replace(c, verdict=_quality_verdict(c.drop, p, c.p_better, c.threshold, alpha), p_adjusted=p)
        )
    return out
