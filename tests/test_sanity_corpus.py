"""The training-fault corpus: every broken --fit FAILs for its own reason, every correct one stays clean.

Small on purpose (64 windows, 3 epochs, one thread): the whole corpus runs in ~15 s on 2 cores.
Reproduce the counts: ``.venv/bin/pytest -q tests/test_sanity_corpus.py`` (one test per function).
"""

from __future__ import annotations

import pytest

from diagnostics.checks import sanity
from diagnostics.context import DiagContext, Thresholds
from diagnostics.result import Status
from moola.data.splits import make_split
from moola.data.synthetic import generate
from tests.fit_corpus.broken import BROKEN
from tests.fit_corpus.correct import CORRECT

THRESHOLDS = Thresholds(sanity_epochs=3)
FAMILIES = {
    "grad_clearing",
    "loss_inputs",
    "label_alignment",
    "divergence",
    "outside_updates",
    "weight_norm",
    "coverage",
}
# epoch_time judges the machine (measured epoch vs the physical bound): on a CI runner shared with other jobs
# it WARNs whatever the fit does, so for the correct corpus it must only never FAIL (tested in test_diag_sanity).
MACHINE_FINDINGS = {"epoch_time"}


@pytest.fixture(scope="module")
def data():
    ds = generate(64, seed=3)
    train, test = make_split(ds, "random")
    return ds, train, test


@pytest.fixture(scope="module")
def overfit_cache(data):
    ds, train, test = data
    ctx = DiagContext(ds, train, test, device="cpu", thresholds=THRESHOLDS)
    return {"overfit_batch": sanity.overfit_batch(ctx)}


def _findings(data, overfit_cache, fit):
    ds, train, test = data
    ctx = DiagContext(
        ds,
        train,
        test,
        device="cpu",
        fit=fit,
        fit_spec=f"fit_corpus:{fit.__name__}",
        thresholds=THRESHOLDS,
        cache=dict(overfit_cache),
    )
    return {r.name: r for r in sanity.check_sanity(ctx)}


def test_corpus_size_and_families():
    assert len(BROKEN) >= 20 and len(CORRECT) >= 10
    assert set(BROKEN.values()) >= FAMILIES
    assert not set(BROKEN) & set(CORRECT)


@pytest.mark.parametrize("fit", list(BROKEN), ids=[f.__name__ for f in BROKEN])
def test_broken_fit_fails_for_its_reason(data, overfit_cache, fit):
    found = _findings(data, overfit_cache, fit)
    expected = found[BROKEN[fit]]
    assert expected.status is Status.FAIL, (expected.measured, expected.evidence)
    assert expected.hint and expected.measured and expected.expected


@pytest.mark.parametrize("fit", CORRECT, ids=[f.__name__ for f in CORRECT])
def test_correct_fit_gets_no_fail_and_no_warn(data, overfit_cache, fit):
    found = _findings(data, overfit_cache, fit)
    flagged = {
        n: (r.status.value, r.measured)
        for n, r in found.items()
        if r.status is Status.FAIL or (r.status is Status.WARN and n not in MACHINE_FINDINGS)
    }
    assert flagged == {}
    # The new findings measured something (a SKIP would make a clean result meaningless).
    for name in FAMILIES:
        assert found[name].status is Status.PASS, (name, found[name].measured)
