"""Rendering: golden Markdown and plain-text table, the versioned JSON schema, atomic report writing.

Regenerate the golden files after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_diag_render.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from diagnostics import render
from diagnostics.render import print_report, render_table, to_json, to_markdown, verdict_line, write_reports
from diagnostics.result import SCHEMA_VERSION, CheckResult, Status, skip

GOLDEN = Path(__file__).parent / "golden"

RESULTS = [
    CheckResult("config", "lr", Status.PASS, "AdamW lr 0.0001", "1e-05 <= lr <= 0.01"),
    CheckResult(
        "params",
        "params_per_sample",
        Status.FAIL,
        "565,636 params / 174 samples = 3,251:1",
        "<= 1,000:1 (WARN above), <= 3,000:1 (FAIL above)",
        hint="use --model jade_compact (56,324 params, 324:1)",
        evidence=("N = 174 labeled windows", "  encoder.l0   68,608"),
        values={"ratio": 3250.78},
    ),
    CheckResult(
        "data",
        "class_balance",
        Status.WARN,
        "train minority 5% | test minority 0%",
        "every class >= 10% of every split",
        hint="stratify the split",
        evidence=("test has no 'b' windows",),
    ),
    skip("gpu", "device", "no usable GPU: torch is built without CUDA"),
]
META = {"model": "enhanced_simple_lstm", "data": "embedded synthetic default (174 windows)", "split": "random",
        "n_train": 139, "n_test": 35, "device": "auto"}  # fmt: skip


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} changed; if intended, rerun with UPDATE_GOLDEN=1"
    )


def plain_console() -> Console:
    return Console(
        record=True, width=120, color_system=None, force_terminal=False, file=open(os.devnull, "w")
    )


def test_markdown_golden():
    golden("report.md", to_markdown(RESULTS, META))


def test_table_golden():
    console = plain_console()
    console.print(render_table(RESULTS))
    golden("table.txt", console.export_text())


def test_console_report_golden_includes_evidence_and_verdict():
    console = plain_console()
    print_report(RESULTS, META, console)
    text = console.export_text()
    golden("console.txt", text)
    assert "encoder.l0" in text and text.rstrip().endswith("verdict FAIL: 1 FAIL, 1 WARN, 1 PASS, 1 SKIP")


def test_markdown_escapes_pipes_and_lists_fail_before_warn():
    md = to_markdown(RESULTS, META)
    assert "train minority 5% \\| test minority 0%" in md
    assert md.index("**FAIL `params/params_per_sample`**") < md.index("**WARN `data/class_balance`**")
    assert md.splitlines()[0] == "## moola-diag: FAIL: 1 FAIL, 1 WARN, 1 PASS, 1 SKIP"


def test_json_schema_is_versioned_and_complete():
    payload = to_json(RESULTS, META, created="2025-01-01T00:00:00+00:00")
    assert set(payload) == {
        "schema_version",
        "tool",
        "created",
        "meta",
        "verdict",
        "exit_code",
        "counts",
        "results",
    }
    assert payload["schema_version"] == SCHEMA_VERSION
    assert payload["tool"]["name"] == "moola-diag"
    assert payload["verdict"] == "FAIL" and payload["exit_code"] == 1
    assert payload["counts"] == {"FAIL": 1, "WARN": 1, "PASS": 1, "SKIP": 1}
    assert payload["results"][1]["status"] == "FAIL" and payload["results"][1]["values"] == {"ratio": 3250.78}
    assert json.loads(json.dumps(payload)) == payload  # plain JSON types only


def test_verdict_of_nothing_and_of_all_pass():
    assert verdict_line([]) == "SKIP: no findings"
    assert verdict_line(RESULTS[:1]) == "PASS: 1 PASS"


def test_write_reports_writes_both_atomically(tmp_path: Path):
    out = tmp_path / "reports"
    written = write_reports(RESULTS, META, out, json_path=tmp_path / "x" / "r.json")
    assert sorted(p.name for p in written) == ["r.json", "report.html", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["verdict"] == "FAIL"
    assert (out / "report.md").read_text().startswith("## moola-diag: FAIL")
    assert "<h1>moola-diag: FAIL: 1 FAIL, 1 WARN, 1 PASS, 1 SKIP</h1>" in (out / "report.html").read_text()
    assert sorted(p.name for p in out.iterdir()) == [
        "report.html",
        "report.json",
        "report.md",
    ]  # no temp files


def test_a_rendering_failure_leaves_the_previous_reports_untouched(tmp_path: Path, monkeypatch):
    write_reports(RESULTS, META, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(*_a, **_k):
        raise RuntimeError("renderer bug")

    for module, fn in ((render.markdown, "check_markdown"), (render.html, "check_html")):
        with monkeypatch.context() as patch:
            patch.setattr(module, fn, boom)
            with pytest.raises(RuntimeError, match="renderer bug"):
                write_reports(RESULTS[:1], META, tmp_path)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_result_values_become_strict_json():
    import numpy as np

    r = CheckResult(
        "x",
        "y",
        Status.PASS,
        "m",
        "e",
        values={"nan": float("nan"), "n": np.int64(3), "f": [np.float32(0.5)]},
    )
    assert r.to_dict()["values"] == {"nan": None, "n": 3, "f": [0.5]}
    json.dumps(r.to_dict(), allow_nan=False)  # raises if a NaN slipped through
