"""The HTML reports' structure (golden outlines), FAIL-first order, offline self-containment, and that a
saved JSON re-renders to the very page the run wrote. The browser test is tests/test_report_browser.py.

Regenerate the outlines after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_report_html.py``.
"""

from __future__ import annotations

import functools
import re
from html import escape
from pathlib import Path

from diagnostics.render import html, write_reports
from moola.io import dumps_json
from tests.report_fixtures import META, check_payload, check_results, gate_payload, outline
from tests.test_diag_render import golden


def render_main(args: list[str]):
    """``python -m diagnostics.render ARGS`` in-process: (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from diagnostics.render.__main__ import app

    result = CliRunner().invoke(app, args)
    return result.exit_code, result.stdout, result.stderr


@functools.cache
def check_page() -> str:
    return html.check_html(check_payload())


@functools.cache
def gate_page() -> str:
    return html.gate_html(gate_payload())


def test_check_page_outline_golden():
    golden("report.html.outline", outline(check_page()))


def test_gate_page_outline_golden():
    golden("gate.html.outline", outline(gate_page()))


def test_a_fail_and_its_plot_come_first():
    page = check_page()  # the FAIL is the last finding the run produced
    articles = re.findall(r'<article class="finding status-(\w+)" id="([^"]+)"', page)
    assert articles[0] == ("FAIL", "params-params_per_sample")
    first_plot = re.search(r'data-plot="([^"]+)"', page)
    assert first_plot is not None and first_plot.group(1) == "params-per-layer"
    assert page.index("params-per-layer") < page.index('status-WARN"')
    sections = re.findall(r'<section class="check" id="check-(\w+)"', page)
    assert sections[:2] == ["params", "leakage"]  # FAIL, then WARN, then the rest in run order


def test_every_finding_with_plot_data_gets_its_plot_and_nothing_fails_to_draw():
    page = check_page()
    plots = re.findall(r'<figure class="plot" data-plot="([^"]+)">\s*<svg', page)
    assert sorted(plots) == sorted([
        "params-per-layer", "near-duplicate-distances", "nearest-gaps", "accuracy-ci", "accuracy-gap",
        "training-curves", "epoch-time", "run-distribution", "run-curves", "gpu-burst",
    ])  # fmt: skip
    assert 'class="plot-error"' not in page


def test_the_page_is_self_contained():
    for page in (check_page(), gate_page()):
        assert not re.search(r"<(script|link|img|iframe)\b", page)
        assert not re.search(r"(src|href)=\"(https?:)?//", page)
        assert not re.search(r"url\((?!#)", page)  # only the SVGs' own clip paths


def test_a_plot_that_cannot_be_drawn_is_named_on_the_page_not_lost(monkeypatch):
    from diagnostics.render import plots

    def broken(f, ctx):
        raise ValueError("bad data")

    monkeypatch.setitem(plots._PLOTS, ("params", "params_per_sample"), ("params-per-layer", broken))
    page = html.check_html(check_payload())
    assert "plot of params/params_per_sample failed: ValueError(&#x27;bad data&#x27;)" in page
    assert page.count("<svg") == 9  # the other plots are still there


def test_gate_page_puts_the_regression_and_its_samples_first_and_shows_quality():
    page = gate_page()
    assert page.index('id="regressions"') < page.index('id="changes"') < page.index('id="unchanged"')
    first = re.search(r'data-plot="([^"]+)"', page)
    assert first is not None and first.group(1) == "samples-TrainEpoch-time_epoch(jade_compact)"
    quality = page.index('data-plot="quality-Quality-track_val_acc(jade_compact)"')
    assert quality < page.index('id="changes"')  # a quality regression is a regression: it comes first too
    assert "<h1>moola benchmark gate: REGRESSION: 2 regression(s)" in page


def test_a_saved_report_rerenders_to_the_same_page(tmp_path: Path):
    write_reports(check_results(), META, tmp_path)
    assert render_main([str(tmp_path / "report.json"), "--out", str(tmp_path / "again.html")])[0] == 0
    assert (tmp_path / "again.html").read_bytes() == (tmp_path / "report.html").read_bytes()


def test_rerendering_something_else_is_one_line_exit_2(tmp_path: Path):
    bad = tmp_path / "x.json"
    bad.write_text('{"a": 1}')
    code, _out, err = render_main([str(bad)])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"{bad}: not a moola-diag check, gate or sensitivity report")
    assert bad.read_text() == '{"a": 1}' and not bad.with_suffix(".html").exists()


def test_one_layer_renders_every_format_from_the_saved_json(tmp_path: Path):
    """Markdown and the terminal's table come from the saved JSON through the same renderers the commands
    use: the gate's Markdown re-renders to the bytes the gate wrote, the check's to its report.md."""
    from tests.report_fixtures import gate_report

    write_reports(check_results(), META, tmp_path)
    assert (
        render_main([str(tmp_path / "report.json"), "--format", "md", "--out", str(tmp_path / "a.md")])[0]
        == 0
    )
    assert (tmp_path / "a.md").read_bytes() == (tmp_path / "report.md").read_bytes()
    code, text, _ = render_main([str(tmp_path / "report.json"), "--format", "text"])
    assert (
        code == 0
        and "params_per_sample" in text
        and text.rstrip().splitlines()[-1].startswith("verdict FAIL")
    )

    report = gate_report()
    saved = tmp_path / "gate.json"
    saved.write_text(dumps_json(gate_payload()))
    assert render_main([str(saved), "--format", "md"])[0] == 0
    assert saved.with_suffix(".md").read_text(encoding="utf-8") == report.to_markdown()
    code, text, _ = render_main([str(saved), "--format", "text"])
    assert code == 0 and text.rstrip().splitlines()[-1].startswith(f"REGRESSION: {report.verdict_line()}")
    from diagnostics.render.gate import quality_cells

    page = html.gate_html(gate_payload())
    cells = [c for q in gate_payload()["quality"] for c in quality_cells(q)[1:-1]]
    assert cells and all(escape(c) in page and c in saved.with_suffix(".md").read_text() for c in cells)


def test_a_format_the_report_has_no_renderer_for_and_an_out_over_the_input_are_one_line(tmp_path: Path):
    saved = tmp_path / "gate.json"
    saved.write_text(dumps_json(gate_payload()))
    before = saved.read_bytes()
    for args, message in (
        (["--format", "pdf"], "--format pdf: choose from html, md, text"),
        (["--out", str(saved)], f"--out {saved}: that is the report being read; choose another file"),
    ):
        code, _out, err = render_main([str(saved), *args])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].endswith(f"error: {message}")
    sens = tmp_path / "sens.json"
    sens.write_text(dumps_json({"settings": {}, "slow": [], "identical": []}))
    code, _out, err = render_main([str(sens), "--format", "md"])
    assert code == 2 and err.strip().endswith("--format md: a sensitivity report renders as html")
    assert saved.read_bytes() == before and not sens.with_suffix(".md").exists()


def test_gate_html_option_writes_the_page(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    import diagnostics.gate.core as core
    from diagnostics.cli import app
    from tests.report_fixtures import gate_report

    monkeypatch.setattr(
        core, "run", lambda *a, **k: gate_report()
    )  # the measuring is tested in test_gate_e2e
    out = tmp_path / "gate.html"
    result = CliRunner().invoke(app, ["gate", "--base", "main", "--html", str(out)])
    assert result.exit_code == 1, result.output  # the fixture's regression
    assert f"wrote {out}" in result.output.replace("\n", "")
    page = out.read_text(encoding="utf-8")
    assert "<h1>moola benchmark gate: REGRESSION" in page and page.count("<svg") == 5


def test_sensitivity_writes_its_page_beside_its_json(tmp_path: Path):
    import json

    from diagnostics.gate.sensitivity import measure

    out = tmp_path / "sens.json"
    measure(family="forward", trials=0, out=str(out), progress=lambda _m: None)
    page = (tmp_path / "sens.html").read_text(encoding="utf-8")
    assert json.loads(out.read_text())["summary"]["trials"] == 0
    assert "<h1>gate sensitivity (forward): detected 0/0" in page
    assert render_main([str(out), "--out", str(tmp_path / "again.html")])[0] == 0
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == page


def test_sensitivity_page_plots_each_trials_largest_ratio():
    page = html.sensitivity_html(
        {
            "settings": {"family": "train", "slowdown": 0.2},
            "slow": [gate_payload(), gate_payload()],
            "identical": [gate_payload()],
            "summary": {"detections": 2, "false_alarms": 1, "errors": 0, "trials": 2},
        }
    )
    assert 'data-plot="sensitivity-ratios"' in page and page.count("<svg") == 1
    assert "detected 2/2 injected 20% slowdowns; 1/2 false alarms" in page


def test_plots_drawn_while_the_runs_train_are_reused_by_the_page(monkeypatch):
    """check-all draws the finished checks' plots while the stability runs train (``prerender``): the final
    page must draw none of them again, and be the page it would have been without."""
    from diagnostics.render import plots, prerender

    results = check_results()
    plots._drawn.cache_clear()
    expected = html.check_html(check_payload())
    plots._drawn.cache_clear()
    drawn = []
    real = plots.render
    monkeypatch.setattr(plots, "render", lambda fn, *args: drawn.append(fn) or real(fn, *args))
    prerender(results[:-1], META)  # everything but the last finding: its check is still running
    before = len(drawn)
    assert before >= 9
    page = html.check_html(check_payload())
    assert len(drawn) == before + 1  # only the last finding's plot is new
    assert page == expected
