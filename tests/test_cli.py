"""The ``moola`` CLI through typer's test runner, plus the console-script entry in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from moola.cli import app
from tests import helpers

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result) -> str:
    return helpers.one_line_error(result, "moola")


def test_models_table_lists_every_model_with_exact_legacy_count():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "565,636" in rows["enhanced_simple_lstm"]
    assert "yes" in rows["enhanced_simple_lstm"]
    assert "*" in rows["jade_compact"], "jade_compact must be marked as the CLI default"
    assert "no" in rows["jade_compact"]


def test_data_generate_then_inspect_round_trip(tmp_path: Path):
    out = tmp_path / "windows.parquet"
    result = invoke("data", "generate", "--out", str(out), "--n-windows", "40", "--seed", "3")
    assert result.exit_code == 0, result.output
    inspected = invoke("data", "inspect", str(out))
    assert inspected.exit_code == 0, inspected.output
    assert "(40, 105, 4)" in inspected.stdout
    assert "float32" in inspected.stdout


def test_data_generate_refuses_to_overwrite_without_force(tmp_path: Path):
    out = tmp_path / "windows.parquet"
    out.write_bytes(b"keep me")
    result = invoke("data", "generate", "--out", str(out))
    assert result.exit_code == 2
    assert "--force" in one_line_error(result)
    assert out.read_bytes() == b"keep me"


def test_train_writes_a_complete_run_directory(tmp_path: Path):
    result = invoke("train", "--n-epochs", "2", "--out-dir", str(tmp_path), "--predict-pointers")
    assert result.exit_code == 0, result.output
    (run_dir,) = list(tmp_path.iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["model"] == "jade_compact"
    assert config["config"]["predict_pointers"] is True
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    assert {
        "train_loss_running",
        "train_acc_running",
        "samples_per_s",
        "val_loss",
        "val_acc",
        "majority_acc",
        "pointer_mae_bars",
    } <= set(metrics[0])
    assert (run_dir / "model.pt").stat().st_size > 0


def test_train_on_cuda_without_cuda_is_a_one_line_user_error(tmp_path: Path):
    result = invoke("train", "--device", "cuda", "--n-epochs", "1", "--out-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "cuda" in one_line_error(result).lower()


def test_train_with_missing_data_file_names_the_file(tmp_path: Path):
    missing = tmp_path / "nope.parquet"
    result = invoke("train", "--data", str(missing), "--out-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "nope.parquet" in one_line_error(result)


def test_unknown_model_lists_the_choices(tmp_path: Path):
    result = invoke("train", "--model", "resnet", "--out-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "jade_compact" in one_line_error(result)


@pytest.mark.parametrize(
    "command", [[], ["train"], ["models"], ["data"], ["data", "generate"], ["data", "inspect"]]
)
def test_every_option_has_help_text(command: list[str]):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    option_lines = [line for line in result.stdout.splitlines() if line.strip().lstrip("│ ").startswith("--")]
    for line in option_lines:
        # An option line with help has text after the option names and type.
        assert len(line.strip("│ ").split()) > 2, f"option without help: {line!r}"


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moola.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_console_entry_turns_usage_errors_into_one_line():
    result = _run_cli("train", "--no-such-option")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moola: error:"), result.stderr


def test_help_does_not_import_torch():
    code = "import sys, moola.cli; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_train_on_a_single_class_file_is_a_user_error(tmp_path: Path):
    from moola.data.loader import save_windows
    from moola.data.synthetic import generate

    ds = generate(30, seed=2)
    path = save_windows(ds.subset(np.flatnonzero(ds.y == 1)), tmp_path / "one.parquet")
    result = invoke("train", "--data", str(path), "--out-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert "only one class ('retracement')" in one_line_error(result)
    assert not (tmp_path / "runs").exists()  # nothing half-made
