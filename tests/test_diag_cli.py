"""moola-diag through typer's CliRunner (exit codes, one-line errors, reports) and build_context's errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from diagnostics import registry
from diagnostics.cli import CHECK_HELP, app
from diagnostics.commands import Options, run, run_checks
from diagnostics.loading import build_context, concat_datasets, parse_fit
from diagnostics.registry import CHECK_ORDER
from diagnostics.result import Status
from moola.data.loader import save_windows
from moola.data.synthetic import generate
from moola.errors import MoolaError
from tests import helpers

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result) -> str:
    return helpers.one_line_error(result, "moola-diag")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch):
    # The CLI writes reports/ under the working directory by default: keep the repository clean.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    ds = generate(60, seed=11)
    root = tmp_path_factory.mktemp("diag")
    out = {
        "all": save_windows(ds, root / "all.parquet"),
        "train": save_windows(ds.subset(np.arange(40)), root / "train.parquet"),
        "test": save_windows(ds.subset(np.arange(40, 52)), root / "test.parquet"),
        "val": save_windows(ds.subset(np.arange(52, 60)), root / "val.parquet"),
    }
    # A test file whose only class is absent from its training file.
    first = ds.subset(np.flatnonzero(ds.y == 0)[:20])
    other = ds.subset(np.flatnonzero(ds.y == 1)[:5])
    out["train_one_class"] = save_windows(first, root / "train_one_class.parquet")
    out["test_other_class"] = save_windows(other, root / "test_other_class.parquet")
    return out


# --------------------------------------------------------------------------- start-up cost and help


def test_importing_the_cli_loads_neither_torch_nor_pandas_nor_numpy():
    heavy = "('torch', 'pandas', 'pyarrow', 'numpy')"
    code = f"import sys, diagnostics.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


def test_console_script_help_runs_without_torch():
    code = textwrap.dedent(
        """
        import sys
        sys.argv = ["moola-diag", "--help"]
        from diagnostics.cli import main
        try:
            main()
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        assert "torch" not in sys.modules
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "check-all" in out.stdout


def test_every_command_and_option_has_help():
    import typer.main

    group = typer.main.get_command(app)
    assert {"check-all", *CHECK_ORDER} <= set(group.commands)
    for name in ("check-all", *CHECK_ORDER):
        command = group.commands[name]
        assert command.help, name
        options = {p.name: p for p in command.params}
        for opt in (
            "data",
            "train",
            "test",
            "val",
            "split",
            "model",
            "device",
            "fit",
            "seed",
            "json_path",
            "report_dir",
            "debug",
        ):
            assert options[opt].help, (name, opt)
    assert set(CHECK_HELP) == set(CHECK_ORDER)
    gate = group.commands["gate"]
    assert gate.help and all(p.help for p in gate.params), [p.name for p in gate.params if not p.help]


# --------------------------------------------------------------------------- exit codes


def test_params_exit_1_on_legacy_model_and_0_on_default(tmp_path: Path):
    bad = invoke("params", "--model", "enhanced_simple_lstm", "--json", str(tmp_path / "r.json"))
    assert bad.exit_code == 1, bad.output
    assert "565,636" in bad.stdout and "3,251:1" in bad.stdout and "jade_compact" in bad.stdout
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["verdict"] == "FAIL" and payload["meta"]["model"] == "enhanced_simple_lstm"
    assert payload["meta"]["n_windows"] == 174 and payload["meta"]["split"] == "random"
    good = invoke("params")
    assert good.exit_code == 0, good.output
    assert "jade_compact" in good.stdout
    # the default report directory is ./reports
    assert json.loads(Path("reports/report.json").read_text())["verdict"] == "PASS"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ("--model", "nope"),
            "--model 'nope': unknown; choose from enhanced_simple_lstm, jade, jade_compact",
        ),
        (("--device", "tpu"), "--device 'tpu'"),
        (("--split", "kfold"), "--split 'kfold'"),
        (("--data", "missing.parquet"), "--data missing.parquet: file not found"),
        (("--fit", "nocolon"), "expected MODULE:FUNC"),
        (("--fit", "no_such_module_xyz:fit"), "cannot import module 'no_such_module_xyz'"),
        (("--train", "a.parquet"), "--test is required"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, needle):
    result = invoke("config", *args)
    assert result.exit_code == 2, result.output
    assert needle in one_line_error(result)


def test_data_with_train_is_rejected(files):
    result = invoke(
        "config", "--data", str(files["all"]), "--train", str(files["train"]), "--test", str(files["test"])
    )
    assert result.exit_code == 2
    assert "--data cannot be combined" in one_line_error(result)


def test_debug_shows_the_traceback_for_user_errors():
    result = invoke("config", "--model", "nope", "--debug")
    assert result.exit_code != 0
    assert isinstance(result.exception, MoolaError)


# --------------------------------------------------------------------------- data options


def test_given_train_test_val_files(files, tmp_path: Path):
    args = ["data", "--train", str(files["train"]), "--test", str(files["test"]), "--val", str(files["val"])]
    result = invoke(*args, "--report-dir", str(tmp_path / "rep"))
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "rep" / "report.json").read_text())
    meta = payload["meta"]
    assert (meta["split"], meta["n_train"], meta["n_test"], meta["n_val"]) == ("given", 40, 12, 8)
    assert (tmp_path / "rep" / "report.md").read_text().startswith("## moola-diag: PASS")
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["report.html", "report.json", "report.md"]


def test_label_only_in_test_file_is_a_user_error(files):
    result = invoke(
        "data", "--train", str(files["train_one_class"]), "--test", str(files["test_other_class"])
    )
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "test_other_class.parquet" in line and "'retracement'" in line


def test_concat_maps_classes_by_name():
    ds = generate(30, seed=4)
    only_b = ds.subset(np.flatnonzero(ds.y == 1))
    # The loader names a file's classes from its own labels: a one-class file has classes ("retracement",).
    relabeled = replace(only_b, y=np.zeros(len(only_b), dtype=np.int64), classes=("retracement",))
    combined, (_, i_test) = concat_datasets([("train", ds), ("test", relabeled)])
    assert combined.classes == ds.classes
    assert (combined.y[i_test] == 1).all()
    np.testing.assert_array_equal(combined.X[i_test], only_b.X)
    assert combined.pointers is not None and combined.pointers.shape == (len(ds) + len(only_b), 2)


def test_data_file_with_split_choice(files):
    ctx = build_context(data=files["all"], split="temporal")
    assert ctx.split_kind == "temporal" and len(ctx.train_idx) + len(ctx.test_idx) == 60
    assert not set(ctx.train_idx) & set(ctx.test_idx)
    with pytest.raises(MoolaError, match="already split"):
        build_context(train=files["train"], test=files["test"], split="random")


# --------------------------------------------------------------------------- --fit


def test_parse_fit_errors_and_success(tmp_path: Path, monkeypatch):
    (tmp_path / "user_fit_mod.py").write_text(
        "NOT_CALLABLE = 3\ndef fit(model, X, y, epochs, device):\n    pass\n"
    )
    (tmp_path / "broken_fit_mod.py").write_text("import does_not_exist_pkg\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert callable(parse_fit("user_fit_mod:fit"))
    with pytest.raises(MoolaError, match="has no attribute 'nope'"):
        parse_fit("user_fit_mod:nope")
    with pytest.raises(MoolaError, match="is a int, not a function"):
        parse_fit("user_fit_mod:NOT_CALLABLE")
    with pytest.raises(MoolaError, match=r"cannot import module 'broken_fit_mod'.*does_not_exist_pkg"):
        parse_fit("broken_fit_mod:fit")
    for bad in ("a:", ":f", "a:b:c", ""):
        with pytest.raises(MoolaError, match="expected MODULE:FUNC"):
            parse_fit(bad)


# --------------------------------------------------------------------------- fail closed


def test_a_crashing_check_is_a_fail_result_not_a_crash(monkeypatch, tmp_path: Path):
    registry.get_check("config")  # make sure the real one is registered before patching

    def boom(ctx):
        raise ZeroDivisionError("planted")

    monkeypatch.setitem(registry._REGISTRY, "config", boom)
    result = invoke("config", "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 1, result.output
    (finding,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert finding["status"] == "FAIL" and finding["name"] == "crashed"
    assert "ZeroDivisionError: planted" in finding["measured"]
    debug = invoke("config", "--debug")
    assert isinstance(debug.exception, ZeroDivisionError)


def test_run_without_typer_returns_results_and_meta():
    outcome = run(Options(model="enhanced_simple_lstm"), ("params", "config"))
    assert outcome.exit_code == 1
    assert [r.check for r in outcome.results][:1] == ["params"]
    assert outcome.meta["checks"] == ["params", "config"] and outcome.written == []
    ctx = build_context()
    assert [r.status for r in run_checks(ctx, ("params",))] == [Status.PASS]


def test_work_before_a_background_check_gets_the_results_so_far(monkeypatch):
    from diagnostics import commands

    monkeypatch.setattr(commands, "has_prefetch", lambda name: name == "config")  # as stability is
    seen = []
    results = run_checks(
        build_context(), ("params", "config"), before_waiting=lambda done: seen.append(list(done))
    )
    assert [{r.check for r in done} for done in seen] == [{"params"}]  # once, before config, with params'
    assert {r.check for r in results} == {"params", "config"}


# --------------------------------------------------------------------------- the whole suite


@pytest.mark.slow
def test_check_all_on_default_data_writes_consistent_reports(tmp_path: Path):
    result = invoke("check-all", "--device", "cpu", "--report-dir", str(tmp_path))
    payload = json.loads((tmp_path / "report.json").read_text())
    assert result.exit_code == payload["exit_code"], result.output
    assert {r["check"] for r in payload["results"]} == set(CHECK_ORDER)
    assert not [r for r in payload["results"] if r["name"] == "crashed"], result.output
    by = {(r["check"], r["name"]): r["status"] for r in payload["results"]}
    assert by[("params", "params_per_sample")] == "PASS"
    assert by[("gpu", "device")] == "SKIP"
    assert f"verdict {payload['verdict']}" in result.stdout


def test_single_class_training_data_is_a_user_error(files):
    result = invoke("config", "--data", str(files["train_one_class"]))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "train_one_class.parquet: column 'label'" in line and "only one class ('consolidation')" in line


def test_temporal_split_leaving_a_class_out_of_training_is_a_user_error(tmp_path: Path):
    # A third class whose windows all come last in time: a temporal split puts it only in test.
    ds = generate(40, seed=3)
    y = ds.y.copy()
    y[-3:] = 2
    ds = replace(
        ds,
        y=y,
        classes=(*ds.classes, "reversal"),
        source=np.full(len(ds), "s"),
        bar_start=np.arange(len(ds), dtype=np.int64) * 200,
    )
    path = save_windows(ds, tmp_path / "sorted.parquet")
    result = invoke("config", "--data", str(path), "--split", "temporal")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "'reversal' occurs in the test split (3 window(s))" in line and "try --split random" in line


def test_gate_with_a_missing_revision_or_outside_git_is_a_user_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repository above tmp_path
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f.txt").write_text("x")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)

    result = invoke("gate", "--base", "no-such-rev", "--repo", str(repo))
    assert result.exit_code == 2
    assert "--base: revision 'no-such-rev' does not exist" in one_line_error(result)
    outside = tmp_path / "plain"
    outside.mkdir()
    result = invoke("gate", "--base", "HEAD", "--repo", str(outside))
    assert result.exit_code == 2
    assert "not inside a git repository" in one_line_error(result)
