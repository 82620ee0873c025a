"""The plots of the HTML reports: matplotlib figures drawn from a report's JSON, returned as inline SVG.

Each plot reads only what the check (or gate) already wrote into its JSON ``values``; a finding without the
data for its plot simply has none. Every plot pairs the measurement with what it was judged against
(thresholds, bounds, the majority share), coloured by the finding's status. matplotlib is imported here
only, when a page is rendered, so the CLI's ``--help`` never pays for it.
"""

from __future__ import annotations

import functools
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOR = {"PASS": "#2e7d32", "WARN": "#e6a100", "FAIL": "#c62828", "SKIP": "#757575"}
BASE, HEAD, NEUTRAL = "#546e7a", "#1565c0", "#9e9e9e"
# Text stays text (small, searchable, crisp); a fixed salt keeps the ids, and so the file, reproducible.
RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "moola-diag",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}
WIDTH = 6.4  # inches; the page scales the SVG to its column

Finding = Mapping[str, Any]
Context = Mapping[str, Any]  # the report's meta (thresholds, ...) for plots that need more than the finding
PlotFn = Callable[[Finding, Context], "Figure | None"]
_PLOTS: dict[tuple[str, str], tuple[str, PlotFn]] = {}


def plot(check: str, name: str, plot_id: str) -> Callable[[PlotFn], PlotFn]:
    def register(fn: PlotFn) -> PlotFn:
        _PLOTS[(check, name)] = (plot_id, fn)
        return fn

    return register


def figure(
    height: float = 2.4,
    ncols: int = 1,
    left: float = 0.65,
    right: float = 0.15,
    bottom: float = 0.5,
    top: float = 0.3,
    **kw: Any,
) -> tuple[Figure, Any]:
    """A figure with fixed margins in inches (a layout engine would double the drawing time, and a report
    is written at the end of every check run)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height))
    axes = fig.subplots(1, ncols, **kw)
    fig.subplots_adjust(
        left=left / WIDTH, right=1 - right / WIDTH, bottom=bottom / height, top=1 - top / height, wspace=0.35
    )
    return fig, axes


def label_inches(labels: Sequence[str]) -> float:
    """Room for y tick labels at font size 9 (about 0.068 in per character)."""
    return 0.25 + 0.068 * max((len(s) for s in labels), default=4)


def to_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), ready to inline in HTML."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg") :].strip()


def finding_plots(finding: Finding, context: Context) -> list[tuple[str, str]]:
    """``[(plot id, svg)]`` for one finding: its registered plot, and a distribution of per-run lists.

    Memoized on the finding, the thresholds (all a plot reads of the context) and the plot functions, so a
    command can draw the plots of the findings it already has while its background work still trains
    (``report.prerender``) and the final page reuses them."""
    candidates = []
    check_and_name = (finding.get("check", ""), finding.get("name", ""))
    if check_and_name in _PLOTS:
        candidates.append(_PLOTS[check_and_name])
    values = finding.get("values", {})
    if isinstance(values.get("runs"), Mapping) or isinstance(values.get("summary"), Mapping):
        candidates.append(("run-distribution", run_distribution))
    if not candidates:
        return []
    key = json.dumps([finding, context.get("thresholds")], sort_keys=True, default=str)
    return list(_drawn(key, tuple(candidates)))


@functools.lru_cache(maxsize=256)
def _drawn(key: str, candidates: tuple[tuple[str, PlotFn], ...]) -> tuple[tuple[str, str], ...]:
    finding, thresholds = json.loads(key)
    context = {"thresholds": thresholds or {}}
    drawn = ((plot_id, render(fn, finding, context)) for plot_id, fn in candidates)
    return tuple((plot_id, svg) for plot_id, svg in drawn if svg)


def render(fn: PlotFn, *args: Any) -> str:
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = fn(*args)
        return "" if fig is None else to_svg(fig)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _threshold(context: Context, key: str) -> float | None:
    return _num(context.get("thresholds", {}).get(key))


# --------------------------------------------------------------------------- checks


@plot("params", "params_per_sample", "params-per-layer")
def params_per_layer(f: Finding, ctx: Context) -> Figure | None:
    v = f["values"]
    layers, n = v.get("layers") or {}, _num(v.get("n_samples"))
    if not layers or not n:
        return None
    names = [*layers, "total"]
    ratios = [layers[k] / n for k in layers] + [float(v.get("params", sum(layers.values()))) / n]
    fig, ax = figure(0.9 + 0.22 * len(names), left=label_inches(names))
    colors = [NEUTRAL] * len(layers) + [COLOR[f["status"]]]
    ax.barh(names, ratios, color=colors)
    ax.invert_yaxis()
    for level, label, style in ((v.get("warn_ratio"), "WARN", "--"), (v.get("fail_ratio"), "FAIL", "-")):
        if _num(level):
            ax.axvline(level, color=COLOR[label], ls=style, lw=1.2, label=f"{label} above {level:,.0f}:1")
    ax.set_xlabel("trainable parameters per labeled window")
    ax.set_title(f"{v.get('model', 'model')}: parameters per window, per layer")
    ax.legend(loc="lower right", frameon=False)
    return fig


@plot("leakage", "majority_baseline", "accuracy-ci")
def accuracy_ci(f: Finding, ctx: Context) -> Figure | None:
    v = f["values"]
    acc, lo, hi = _num(v.get("test_acc")), _num(v.get("ci_low")), _num(v.get("ci_high"))
    share = _num(v.get("majority_share_test"))
    if acc is None or lo is None or hi is None:
        return None
    fig, ax = figure(1.5, left=0.25)
    if share is not None:
        ax.axvspan(0, share, color=NEUTRAL, alpha=0.25, lw=0)
        ax.axvline(share, color="black", lw=1.2, ls="--", label=f"majority share {share:.3f}")
    ax.errorbar([acc], [0], xerr=[[acc - lo], [hi - acc]], fmt="o", color=COLOR[f["status"]], capsize=6,
                lw=2, label=f"test accuracy {acc:.3f}, Wilson 95% CI [{lo:.3f}, {hi:.3f}]")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_yticks([])
    ax.set_ylim(-1, 1)
    ax.spines["left"].set_visible(False)
    ax.set_xlabel("test accuracy")
    ax.set_title("test accuracy and its 95% interval vs always predicting the majority class")
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    return fig


@plot("leakage", "accuracy_gap", "accuracy-gap")
def accuracy_gap(f: Finding, ctx: Context) -> Figure | None:
    v = f["values"]
    train, test = _num(v.get("train_acc")), _num(v.get("test_acc"))
    if train is None or test is None:
        return None
    gap = _threshold(ctx, "accuracy_gap")
    fig, ax = figure(1.5, left=0.6)
    ax.barh(["train", "test"], [train, test], color=[NEUTRAL, COLOR[f["status"]]])
    ax.invert_yaxis()
    title = "train vs test accuracy"
    if gap is not None:
        ax.axvline(train + gap, color=COLOR["FAIL"], ls="--", lw=1.2)
        title += f" (dashed: train + {gap:g}; test beyond it is suspicious)"
    ax.set_xlim(0, max(1.0, train + (gap or 0) + 0.02))
    ax.set_xlabel("accuracy of the shared training run (eval mode)")
    ax.set_title(title)
    return fig


def _pair_hist(ax: Any, series: Mapping[str, Sequence[float]], status: str) -> None:
    import numpy as np

    finite = {k: np.asarray([x for x in s if _num(x) is not None], float) for k, s in series.items()}
    finite = {k: s for k, s in finite.items() if len(s)}
    everything = np.concatenate(list(finite.values())) if finite else np.zeros(0)
    bins = (
        np.histogram_bin_edges(everything, bins=min(40, max(8, len(everything) // 4)))
        if len(everything)
        else 10
    )
    for i, (pair, s) in enumerate(finite.items()):
        color = COLOR[status] if i == 0 else NEUTRAL
        ax.hist(s, bins=bins, alpha=0.7, color=color, label=pair.replace("_", " vs "))
    ax.legend(loc="upper right", frameon=False, fontsize=8)


@plot("leakage", "near_duplicates", "near-duplicate-distances")
def near_duplicate_distances(f: Finding, ctx: Context) -> Figure | None:
    v = f["values"]
    series, frac = (
        v.get("distance_ratios"),
        _num(v.get("fraction")) or _threshold(ctx, "near_duplicate_fraction"),
    )
    if not series:
        return None
    fig, ax = figure()
    _pair_hist(ax, series, f["status"])
    if frac is not None:
        ax.axvline(frac, color=COLOR["FAIL"], lw=1.5, label=f"near-duplicate below {frac:g}x")
        ax.legend(loc="upper right", frameon=False, fontsize=8)
    ax.set_xlim(left=0)
    ax.set_xlabel("nearest-neighbour distance / typical within-train NN distance (z-scored windows)")
    ax.set_ylabel("held-out windows")
    ax.set_title("distance of each held-out window to its nearest window of another split")
    return fig


@plot("leakage", "window_overlap", "nearest-gaps")
def nearest_gaps(f: Finding, ctx: Context) -> Figure | None:
    series = f["values"].get("gaps")
    if not series:
        return None
    fig, ax = figure()
    _pair_hist(ax, series, f["status"])
    ax.axvline(0, color=COLOR["FAIL"], lw=1.5, label="below 0: the windows share bars")
    ax.legend(loc="upper right", frameon=False, fontsize=8)
    ax.set_xlabel("gap in bars to the nearest same-source window of another split")
    ax.set_ylabel("held-out windows")
    ax.set_title("nearest gap in time between the splits")
    return fig


@plot("sanity", "loss_decrease", "training-curves")
def training_curves(f: Finding, ctx: Context) -> Figure | None:
    v = f["values"]
    curve = [x for x in v.get("epoch_loss") or [] if _num(x) is not None]
    if not curve:
        return None
    acc = v.get("epoch_acc") or []
    fig, axes = figure(2.6, ncols=2 if acc else 1)
    ax = axes[0] if acc else axes
    epochs = range(1, len(curve) + 1)
    ax.plot(epochs, curve, color=COLOR[f["status"]], lw=1.5, label="train (mean loss per epoch, as trained)")
    for key, label, marker in (("init_loss", "train at init (eval)", "o"), ("final_loss", "train after (eval)", "s"),
                               ("test_loss", "test after (eval)", "D")):  # fmt: skip
        if _num(v.get(key)) is not None:
            ax.plot([0 if key == "init_loss" else len(curve)], [v[key]], marker, color="black" if key != "test_loss"
                    else HEAD, label=label)  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title("training loss")
    ax.legend(frameon=False, fontsize=7)
    if acc:
        axes[1].plot(range(1, len(acc) + 1), acc, color=COLOR[f["status"]], lw=1.5, label="train")
        axes[1].set_ylim(0, 1)
        axes[1].set_xlabel("epoch")
        axes[1].set_title("training accuracy")
    return fig


@plot("stability", "accuracy", "run-curves")
def run_curves(f: Finding, ctx: Context) -> Figure | None:
    """Each stability run's train and validation loss and accuracy per epoch (moola's trainer's own log)."""
    runs = [c for c in f["values"].get("curves") or [] if isinstance(c, Mapping) and c.get("val_loss")]
    if not runs:
        return None
    fig, (loss_ax, acc_ax) = figure(2.8, ncols=2, left=0.6, top=0.55)
    for i, c in enumerate(runs):
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
            for part, style, color in (("train", "-", NEUTRAL), ("val", "-", COLOR[f["status"]])):
                ys = c.get(f"{part}_{metric}") or []
                ax.plot(range(1, len(ys) + 1), ys, style, color=color, lw=1, alpha=0.8,
                        label=f"{part}" if i == 0 else None)  # fmt: skip
    base = f["values"].get("baseline") or {}
    if _num(base.get("mean")) is not None:
        acc_ax.axhline(base["mean"], color="black", ls="--", lw=1, label=f"majority {base['mean']:.3f}")
    loss_ax.set_title("loss per epoch")
    acc_ax.set_title("accuracy per epoch")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.legend(frameon=False, fontsize=7)
    fig.suptitle(f"{len(runs)} runs: train (grey) and validation", fontsize=9, fontweight="bold")
    return fig


@plot("sanity", "epoch_time", "epoch-time")
def epoch_time(f: Finding, ctx: Context) -> Figure | None:
    v = f["values"]
    epoch, bound = _num(v.get("epoch_s")), _num(v.get("bound_s"))
    if epoch is None or bound is None or bound <= 0:
        return None
    bars = [("measured epoch", epoch, COLOR[f["status"]])]
    bars += [(f"bound: {k}", _num(v.get(f"{k}_part_s")), NEUTRAL) for k in ("flops", "latency")]
    if _num(v.get("plain_step_s")) and _num(v.get("plain_steps")):
        bars.append(("plain steps per epoch", v["plain_step_s"] * v["plain_steps"], BASE))
    bars = [b for b in bars if b[1]]
    fig, ax = figure(0.9 + 0.3 * len(bars), left=label_inches([b[0] for b in bars]))
    ax.barh([b[0] for b in bars], [b[1] * 1e3 for b in bars], color=[b[2] for b in bars])
    ax.invert_yaxis()
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # plain numbers: mathtext is slow
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(
        bound * 1e3, color=COLOR["FAIL"], lw=1.5, label=f"lower bound {bound * 1e3:.3g} ms (FAIL below)"
    )
    slow, expected = _threshold(ctx, "epoch_slow_factor"), _num(v.get("expected_s")) or bound
    if slow:
        ax.axvline(slow * expected * 1e3, color=COLOR["WARN"], ls="--", lw=1.2,
                   label=f"{slow:g}x max(bound, plain steps) (WARN above)")  # fmt: skip
    ax.set_xlabel("milliseconds per epoch (log)")
    ax.set_title("epoch time vs its physical lower bound")
    ax.legend(loc="lower right", frameon=False, fontsize=7)
    return fig


@plot("gpu", "utilization", "gpu-burst")
def gpu_burst(f: Finding, ctx: Context) -> Figure | None:
    s = f["values"].get("series") or {}
    t, util, mem = s.get("t_s") or [], s.get("util") or [], s.get("mem_used_mib") or []
    if not t or len(t) != len(util):
        return None
    fig, ax = figure(right=0.7)
    ax.plot(t, util, color=COLOR[f["status"]], lw=1.2, label="NVML utilization (% of time a kernel ran)")
    ax.set_ylim(0, 105)
    ax.set_xlabel("seconds into the training burst")
    ax.set_ylabel("utilization %")
    if len(mem) == len(t):
        ax2 = ax.twinx()
        ax2.plot(t, mem, color=BASE, lw=1.2, ls="--", label="memory used (MiB)")
        ax2.set_ylabel("MiB")
        ax2.spines["right"].set_visible(True)
        ax2.legend(loc="lower right", frameon=False, fontsize=8)
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    ax.set_title("GPU over the training burst (NVML)")
    return fig


def _per_run(values: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per-run lists of a finding: ``runs = {metric: [...]}``, or the stability check's ``summary`` and
    ``baseline`` (each ``{"metric", "values": [...], ...}``)."""
    out: dict[str, list[float]] = {}
    if isinstance(values.get("runs"), Mapping):
        out.update({k: list(s) for k, s in values["runs"].items() if isinstance(s, list)})
    for key in ("summary", "baseline"):
        part = values.get(key)
        if isinstance(part, Mapping) and isinstance(part.get("values"), list):
            out[str(part.get("metric") or key)] = list(part["values"])
    return {k: [float(x) for x in s if _num(x) is not None] for k, s in out.items() if s}


def run_distribution(f: Finding, ctx: Context) -> Figure | None:
    """A metric's values over runs (seeds, folds): each run a dot, the mean (and its CI when the finding
    has one) a bar, beside its baseline's runs and the majority share where given."""
    import numpy as np

    values = f["values"]
    runs = {k: s for k, s in _per_run(values).items() if s}
    if not runs:
        return None
    fig, ax = figure(0.9 + 0.4 * len(runs), left=label_inches(list(runs)))
    rng = np.random.default_rng(0)  # jitter only, fixed so the page is reproducible
    for i, s in enumerate(runs.values()):
        color = COLOR[f["status"]] if i == 0 else NEUTRAL
        ax.plot(s, i + rng.uniform(-0.15, 0.15, len(s)), "o", color=color, alpha=0.7, ms=4)
        ax.plot([np.mean(s)], [i], "|", color="black", ms=16, mew=2)
    title = f"spread over {max(len(s) for s in runs.values())} runs"
    summary = values.get("summary") if isinstance(values.get("summary"), Mapping) else {}
    lo, hi, mean = _num(summary.get("ci_low")), _num(summary.get("ci_high")), _num(summary.get("mean"))
    if lo is not None and hi is not None and mean is not None:
        ax.errorbar([mean], [0.3], xerr=[[mean - lo], [hi - mean]], fmt="s", color="black", capsize=4, ms=4)
        title += f": mean {mean:.3g} (■), 95% CI [{lo:.3g}, {hi:.3g}]"
    majority = _num(values.get("majority"))
    if majority is not None:
        ax.axvline(majority, color="black", ls="--", lw=1.2, label=f"majority share {majority:.3f}")
        ax.legend(loc="best", frameon=False, fontsize=8)
    ax.set_yticks(range(len(runs)), list(runs))
    ax.set_ylim(-0.6, len(runs) - 0.4)
    ax.set_xlabel("value per run (| = mean)")
    ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- gate


def timing_samples(t: Mapping[str, Any], samples: Mapping[str, Sequence[float]]) -> Figure | None:
    """One benchmark: base and head samples, and the Hodges-Lehmann head/base ratio with its 95% CI."""
    import numpy as np

    base, head = samples.get("base") or [], samples.get("head") or []
    if not base or not head:
        return None
    scale, unit = (1e3, "ms") if t.get("unit", "s") == "s" else (1 / 2**20, "MiB")
    color = {"regression": COLOR["FAIL"], "improvement": COLOR["PASS"]}.get(t["verdict"], HEAD)
    fig, (ax, ax2) = figure(1.7, ncols=2, left=0.55, top=0.4, width_ratios=[3, 2])
    rng = np.random.default_rng(0)
    for i, (vals, c) in enumerate(((base, BASE), (head, color))):
        arr = np.asarray(vals, float) * scale
        ax.plot(arr, i + rng.uniform(-0.15, 0.15, len(arr)), "o", color=c, alpha=0.7, ms=3.5)
        ax.plot([np.median(arr)], [i], "|", color="black", ms=14, mew=2)
    ax.set_yticks([0, 1], ["base", "head"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlabel(f"{unit} per sample (| = median)")
    lo, hi, r = float(t["ci_low"]), float(t["ci_high"]), float(t["ratio"])
    hi_shown = hi if math.isfinite(hi) else max(r, float(t["factor"])) * 1.2
    ax2.errorbar([r], [0], xerr=[[r - max(lo, 0)], [hi_shown - r]], fmt="o", color=color, capsize=5, lw=2)
    ax2.axvline(1.0, color="black", lw=1)
    ax2.axvline(float(t["factor"]), color=COLOR["FAIL"], ls="--", lw=1.2, label=f"factor {t['factor']:.2f}")
    ax2.set_yticks([])
    ax2.spines["left"].set_visible(False)
    ax2.set_xlabel("head/base (HL, 95% CI)")
    ax2.legend(loc="upper right", frameon=False, fontsize=7)
    fig.suptitle(f"{t['name']}: {t['verdict']}", fontsize=9, fontweight="bold")
    return fig


def quality_distributions(q: Mapping[str, Any]) -> Figure | None:
    """One quality benchmark: base and head values per fresh-seed run, with each side's mean and 95% CI."""
    import numpy as np

    sides = [(k, q.get(k) or {}) for k in ("base", "head")]
    if not all(s.get("values") for _, s in sides):
        return None
    color = COLOR["FAIL"] if q.get("verdict") == "regression" else HEAD
    fig, ax = figure(1.6, left=0.55)
    rng = np.random.default_rng(0)
    for i, (_side, s) in enumerate(sides):
        vals = np.asarray(s["values"], float)
        ax.plot(
            vals, i + rng.uniform(-0.15, 0.15, len(vals)), "o", color=BASE if i == 0 else color, alpha=0.7
        )
        ci, mean = s.get("ci") or [None, None], _num(s.get("mean"))
        if mean is not None and _num(ci[0]) is not None and _num(ci[1]) is not None:
            ax.errorbar([mean], [i + 0.35], xerr=[[mean - ci[0]], [ci[1] - mean]], fmt="s", color="black",
                        capsize=4, ms=4)  # fmt: skip
    ax.set_yticks([0, 1], ["base", "head"])
    ax.set_ylim(-0.6, 1.8)
    better = "higher" if q.get("higher_is_better", True) else "lower"
    metric = q.get("metric") or q.get("unit") or "score"
    ax.set_xlabel(f"{metric} per run, {better} is better (■ = mean with 95% CI)")
    ax.set_title(f"{q.get('name', '')}: {q.get('verdict', '')}")
    return fig


def ratio_overview(timings: Sequence[Mapping[str, Any]]) -> Figure | None:
    """Every timed benchmark's HL ratio with its CI, against 1 and its factor (a forest plot)."""
    if not timings:
        return None
    fig, ax = figure(
        0.8 + 0.2 * len(timings), left=min(3.2, 0.06 * max(len(t["name"]) for t in timings) + 0.2)
    )
    for i, t in enumerate(timings):
        r, lo, hi = float(t["ratio"]), max(float(t["ci_low"]), 0.0), float(t["ci_high"])
        hi = hi if math.isfinite(hi) else r * 1.5
        color = {"regression": COLOR["FAIL"], "improvement": COLOR["PASS"]}.get(t["verdict"], HEAD)
        ax.errorbar([r], [i], xerr=[[r - lo], [hi - r]], fmt="o", color=color, capsize=3, ms=4)
        ax.plot([t["factor"]], [i], "|", color=COLOR["FAIL"], ms=10)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(len(timings)), [t["name"] for t in timings], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("head/base, Hodges-Lehmann with 95% CI (red | = the benchmark's factor)")
    ax.set_title("every timed benchmark")
    return fig


def _largest(run: Mapping[str, Any]) -> tuple[float | None, str]:
    """One gate run's largest timing ratio or, for the quality family, its largest quality drop."""
    if run.get("timings"):
        return max(float(t["ratio"]) for t in run["timings"]), "largest head/base ratio per gate run (HL)"
    drops = [float(q["drop"]) for q in run.get("quality") or [] if _num(q.get("drop")) is not None]
    return (max(drops) if drops else None), "largest quality drop per gate run (head worse by)"


def sensitivity_ratios(results: Mapping[str, Any]) -> Figure | None:
    """The sensitivity tool: each trial's largest ratio (or quality drop), slow head vs identical revisions."""
    import numpy as np

    label = ""
    kinds = []
    for k in ("slow", "identical"):
        found = [_largest(r) for r in results.get(k, [])]
        kinds.append((k, [x for x, _ in found if x is not None]))
        label = next((lab for x, lab in found if x is not None), label)
    if not any(s for _, s in kinds):
        return None
    fig, ax = figure(1.6, left=0.95)
    rng = np.random.default_rng(0)
    for i, (k, s) in enumerate(kinds):
        ax.plot(s, i + rng.uniform(-0.15, 0.15, len(s)), "o", color=COLOR["FAIL"] if k == "slow" else BASE,
                alpha=0.7, ms=4)  # fmt: skip
    slowdown = _num(results.get("settings", {}).get("slowdown"))
    if slowdown and "ratio" in label:
        ax.axvline(1 + slowdown, color=COLOR["FAIL"], ls="--", lw=1.2, label=f"injected x{1 + slowdown:g}")
        ax.legend(loc="upper right", frameon=False, fontsize=8)
    ax.axvline(1.0 if "ratio" in label else 0.0, color="black", lw=1)
    ax.set_yticks([0, 1], ["slow head", "identical"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlabel(label)
    ax.set_title("gate runs on the slow head and on identical revisions")
    return fig
