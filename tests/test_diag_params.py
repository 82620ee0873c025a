"""params check: trainable parameters per training sample, per-layer evidence, the registry model that fits."""

from __future__ import annotations

import numpy as np
import pytest

from diagnostics.checks.params import (
    check_params,
    fitting_models,
    format_ratio,
    layer_breakdown,
    ratio_status,
    registry_counts,
    trainable_parameters,
)
from diagnostics.context import DiagContext, Thresholds
from diagnostics.loading import build_context
from diagnostics.result import Status
from moola.data.synthetic import generate
from moola.models import get_model, list_models


def only(results, name="params_per_sample"):
    (r,) = [r for r in results if r.name == name]
    return r


def test_legacy_model_fails_on_default_data_with_the_quoted_figures():
    ctx = build_context(model="enhanced_simple_lstm")
    r = only(check_params(ctx))
    assert r.status is Status.FAIL
    assert "565,636" in r.measured and "174" in r.measured
    assert "3,251:1" in r.measured
    assert r.values["ratio"] == pytest.approx(565_636 / 174)
    # The hint names a registered, non-legacy model under the WARN ratio, with its real count and ratio.
    compact = trainable_parameters(get_model("jade_compact", n_classes=2))
    assert "jade_compact" in r.hint
    assert f"{compact:,}" in r.hint
    assert format_ratio(compact / 174) in r.hint
    assert any("encoder.l1_reverse" in line for line in r.evidence)


def test_default_model_passes_on_default_data():
    r = only(check_params(build_context(model="jade_compact")))
    assert r.status is Status.PASS
    assert r.hint == ""
    assert r.values["params"] == trainable_parameters(get_model("jade_compact"))


def test_layer_breakdown_accounts_for_every_trainable_parameter():
    for spec in list_models():
        model = get_model(spec.name)
        rows = layer_breakdown(model)
        assert sum(n for _, n in rows) == trainable_parameters(model)
        assert len({name for name, _ in rows}) == len(rows)
    frozen = get_model("jade_compact")
    frozen.set_pointer_head(False)
    assert not any(name.startswith("pointer_head") for name, _ in layer_breakdown(frozen))


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (999.0, Status.PASS),
        (1000.0, Status.PASS),
        (1000.5, Status.WARN),
        (3000.0, Status.WARN),
        (3000.1, Status.FAIL),
    ],
)
def test_ratio_thresholds_are_strict_upper_bounds(ratio, expected):
    assert ratio_status(ratio, Thresholds()) is expected


def test_warn_between_thresholds_and_n_from_train_file_for_given_splits():
    ds = generate(60, seed=1)
    ctx = DiagContext(dataset=ds, train_idx=np.arange(40), test_idx=np.arange(40, 60), split_kind="given")
    ctx.model_name = "jade_compact"
    r = only(check_params(ctx))
    n = trainable_parameters(get_model("jade_compact"))
    # given split: N is the training file's rows, not all windows
    assert r.values["n_samples"] == 40
    assert r.values["ratio"] == pytest.approx(n / 40)
    assert r.status is ratio_status(n / 40, Thresholds())
    assert r.status is not Status.PASS  # 56K / 40 is over 1,000:1


def test_no_registered_model_fits_tiny_data_says_so_with_a_budget():
    ds = generate(12, seed=2)
    ctx = DiagContext(dataset=ds, train_idx=np.arange(10), test_idx=np.arange(10, 12), split_kind="given")
    r = only(check_params(ctx))
    assert r.status is Status.FAIL
    assert "no registered model fits" in r.hint
    assert "10,000" in r.hint  # 1,000:1 x 10 samples


def test_fitting_models_excludes_legacy_and_sorts_by_ratio():
    counts = registry_counts(2)
    fits = fitting_models(counts, 174, Thresholds(), exclude="")
    names = [m for m, _, _ in fits]
    legacy = {s.name for s in list_models() if s.legacy}
    assert names and not (set(names) & legacy)
    assert [q for _, _, q in fits] == sorted(q for _, _, q in fits)
    assert all(q <= 1000 for _, _, q in fits)
