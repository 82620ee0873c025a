"""Summaries of the runs: a metric's mean, its Student-t interval and spread; where one value sits."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from diagnostics.quality.runs import RunQuality

HIGHER_IS_BETTER = {"acc", "macro_f1"}
METRIC_DOCS = {
    "acc": "accuracy",
    "macro_f1": "macro-F1",
    "log_loss": "log-loss (nats)",
    "brier": "Brier score",
    "majority_acc": "majority-class accuracy",
    "prior_log_loss": "class-prior log-loss",
    "pointer_mae_bars": "pointer MAE (bars)",
    "pointer_baseline_mae_bars": "constant-pointer MAE (bars)",
}

# Where each score can lie: the interval of a mean is clipped to it (a t-interval over 4 accuracies near 0.95
# would otherwise reach past 1). Differences between metrics (gains) are not clipped.
BOUNDS = {
    "acc": (0.0, 1.0),
    "macro_f1": (0.0, 1.0),
    "majority_acc": (0.0, 1.0),
    "brier": (0.0, 2.0),
    "log_loss": (0.0, math.inf),
    "prior_log_loss": (0.0, math.inf),
    "pointer_mae_bars": (0.0, math.inf),
    "pointer_baseline_mae_bars": (0.0, math.inf),
}


@dataclass(frozen=True)
class MetricSummary:
    """Mean, its 95% Student-t interval, spread and range of one metric over the runs."""

    metric: str
    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    median: float
    min: float
    max: float
    values: tuple[float, ...]

    def describe(self, digits: int = 3) -> str:
        f = f"{{:.{digits}f}}"
        if self.n < 2:
            return f"{f.format(self.mean)} (1 run: no interval)"
        return (
            f"{f.format(self.mean)} ± {f.format(self.sd)} (95% CI {f.format(self.ci_low)}–"
            f"{f.format(self.ci_high)}, {self.n} runs, range {f.format(self.min)}–{f.format(self.max)})"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["values"] = list(self.values)
        return d


def t_quantile(q: float, df: int) -> float:
    """Student's t quantile: scipy.special's ``stdtrit`` (what ``scipy.stats.t.ppf`` calls), without the
    1-2 s import of scipy.stats on check-all's busiest core."""
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def summarize(metric: str, values: Iterable[float], confidence: float = 0.95) -> MetricSummary:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        nan = float("nan")
        return MetricSummary(metric, 0, nan, nan, nan, nan, nan, nan, nan, ())
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    half = t_quantile(0.5 + confidence / 2, v.size - 1) * sd / math.sqrt(v.size) if v.size > 1 else math.nan
    low, high = BOUNDS.get(metric, (-math.inf, math.inf))
    return MetricSummary(
        metric=metric,
        n=int(v.size),
        mean=mean,
        sd=sd,
        ci_low=max(mean - half, low),
        ci_high=min(mean + half, high),
        median=float(np.median(v)),
        min=float(v.min()),
        max=float(v.max()),
        values=tuple(float(x) for x in v),
    )


@dataclass
class QualityEstimate:
    """Every run's scores, with where they came from; ``summary`` and ``window_errors`` read them."""

    plan: dict[str, Any]  # recipe, split, k, seeds
    description: str
    data_fingerprint: str
    code_revision: str
    n_windows: int
    runs: list[RunQuality]
    cached_runs: int = 0  # runs read from the cache instead of trained
    wall_s: float = 0.0
    workers: int = 1

    def values(self, metric: str, part: str = "val") -> list[float]:
        out = []
        for run in self.runs:
            v = run.scores.get(part, {}).get(metric)
            if v is not None and math.isfinite(v):
                out.append(float(v))
        return out

    def summary(self, metric: str, part: str = "val") -> MetricSummary:
        return summarize(metric, self.values(metric, part))

    def gaps(self, metric: str, baseline: str, part: str = "val") -> MetricSummary:
        """Per run, how much better the model is than its baseline (positive: better)."""
        sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
        diffs = []
        for run in self.runs:
            s = run.scores.get(part, {})
            if s.get(metric) is not None and s.get(baseline) is not None:
                diffs.append(sign * (float(s[metric]) - float(s[baseline])))
        return summarize(f"{metric} - {baseline}", diffs)

    def window_errors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dataset rows, times scored, times wrong), pooled over the runs."""
        rows = np.concatenate(
            [np.asarray(r.val_rows, dtype=np.int64) for r in self.runs] or [np.zeros(0, int)]
        )
        wrong = np.concatenate(
            [~np.asarray(r.val_correct, dtype=bool) for r in self.runs] or [np.zeros(0, bool)]
        )
        scored = np.bincount(rows, minlength=self.n_windows)
        missed = np.bincount(rows, weights=wrong, minlength=self.n_windows).astype(np.int64)
        seen = np.flatnonzero(scored)
        return seen, scored[seen], missed[seen]

    @property
    def train_s(self) -> float:
        return float(sum(r.train_time_s for r in self.runs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "description": self.description,
            "data_fingerprint": self.data_fingerprint,
            "code_revision": self.code_revision,
            "n_windows": self.n_windows,
            "cached_runs": self.cached_runs,
            "wall_s": self.wall_s,
            "workers": self.workers,
            "runs": [r.to_dict() for r in self.runs],
        }


@dataclass(frozen=True)
class Placement:
    """Where one reported value sits among the runs."""

    value: float
    percentile: float  # share of runs at or below the value, in percent
    below: int
    equal: int
    above: int
    summary: MetricSummary = field(repr=False)

    def describe(self) -> str:
        return (
            f"{self.value:.3f} is at the {self.percentile:.0f}th percentile of {self.summary.n} runs "
            f"({self.below} below, {self.equal} equal, {self.above} above; mean {self.summary.mean:.3f})"
        )


def place(value: float, summary: MetricSummary) -> Placement:
    v = np.asarray(summary.values)
    below, equal = int((v < value).sum()), int((v == value).sum())
    pct = 100.0 * (below + 0.5 * equal) / max(len(v), 1)
    return Placement(value, pct, below, equal, int(len(v) - below - equal), summary)
