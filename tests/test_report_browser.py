"""The HTML reports as a person sees them: opened in headless Chromium, no console message, every plot
laid out and drawn. Chromium is Debian's package, installed by scripts/ensure-chromium where missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnostics.render import html
from tests import browser
from tests.report_fixtures import check_payload, gate_payload


@pytest.fixture(scope="session")
def chromium() -> str:
    return browser.chromium()


def assert_seen_whole(seen: browser.Seen, expected_plots: int) -> None:
    assert seen.console == [], seen.console
    assert seen.plot_errors == 0
    assert len(seen.plots) == expected_plots
    for p in seen.plots:
        assert p["width"] > 200 and p["height"] > 60, p  # laid out at a readable size
        assert p["marks"] >= 20, p  # axes, ticks, labels and the data itself drawn


def test_check_page_in_chromium(chromium: str, tmp_path: Path):
    seen = browser.open_page(chromium, html.check_html(check_payload()), tmp_path)
    assert_seen_whole(seen, expected_plots=10)
    assert seen.plots[0]["plot"] == "params-per-layer"  # the FAIL's plot, first


def test_gate_page_in_chromium(chromium: str, tmp_path: Path):
    seen = browser.open_page(chromium, html.gate_html(gate_payload()), tmp_path)
    assert_seen_whole(seen, expected_plots=5)  # three benchmarks' samples, the quality metric, the overview


def test_the_probe_sees_console_errors_and_empty_plots(chromium: str, tmp_path: Path):
    # The check above could pass by never looking: a page with an error and an empty plot must not.
    broken = html.page("x", "verdict-FAIL", "<h1>x</h1>",
                       '<figure class="plot" data-plot="empty"><svg width="400" height="100"></svg></figure>'
                       '<script>console.error("boom")</script>')  # fmt: skip
    seen = browser.open_page(chromium, broken, tmp_path)
    assert any("boom" in line for line in seen.console)
    assert [(p["plot"], p["marks"]) for p in seen.plots] == [("empty", 0)]
