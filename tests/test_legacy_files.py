"""Files in the earlier pipeline's layout (HeinekenBottle/moola), built the way it builds them: pandas
``to_parquet`` of an object column holding, per window, a numpy array of 105 float64 bar arrays; string
ids like "102_exp_1"; pointers as expansion_start/expansion_end (absolute, bars 30-74) or, in the
canonical variant, pointer_start/pointer_end counted from bar 30; split files as JSON lists of row
indices. Exercised through ``moola train``, ``moola data inspect`` and ``moola-diag``.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from diagnostics.checks import data as data_check
from diagnostics.checks import leakage
from diagnostics.cli import app as diag_app
from diagnostics.loading import build_context
from diagnostics.result import Status
from moola.cli import app as moola_app
from moola.data.loader import load_windows
from moola.data.synthetic import generate
from moola.errors import MoolaError
from tests import helpers

runner = CliRunner()
INNER = 30  # the earlier pipeline's inner window starts at bar 30 and ends at bar 74


def moola(*args: str):
    return runner.invoke(moola_app, list(args))


def diag(*args: str):
    return runner.invoke(diag_app, list(args))


def _bars(window: np.ndarray) -> np.ndarray:
    """One window as the earlier pipeline stores it: a (105,) object array of float64 (4,) arrays."""
    cell = np.empty(len(window), dtype=object)
    for i, bar in enumerate(window):
        cell[i] = np.asarray(bar, dtype=np.float64)
    return cell


def legacy_frame(
    n: int = 40,
    *,
    seed: int = 0,
    pointers: str | None = "expansion",
    reversal: bool = False,
    extra_columns: bool = True,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(frame, raw OHLC float64 (n, 105, 4), absolute pointers (n, 2)) in the earlier layout.

    Rows are in time order (the synthetic windows sorted by bar_start) but carry no bar_start column,
    as the earlier files do not.
    """
    ds = generate(n, seed=seed)
    order = np.lexsort((ds.source, ds.bar_start))
    X = ds.X[order].astype(np.float64)
    labels = np.asarray(ds.classes)[ds.y[order]].astype(object)
    if reversal:
        labels[np.arange(n) % 5 == 4] = "reversal"
    # Expansions inside the inner window, as the labeling tool limits them.
    start = np.clip(ds.pointers[order, 0], INNER, 74 - 10)
    end = np.clip(np.maximum(ds.pointers[order, 1], start), start, 74)
    frame: dict[str, object] = {
        "window_id": [f"{100 + i}_exp_1" for i in range(n)],
        "label": labels,
        "features": [_bars(w) for w in X],
    }
    if pointers == "expansion":
        frame["expansion_start"], frame["expansion_end"] = start, end
    elif pointers == "canonical":
        frame["pointer_start"], frame["pointer_end"] = start - INNER, end - INNER
    if extra_columns:
        frame["source"] = ds.source[order].astype(object)
        frame["quality"] = np.full(n, "A", dtype=object)
    return pd.DataFrame(frame), X, np.stack([start, end], axis=1)


def write(tmp_path: Path, df: pd.DataFrame, name: str = "legacy.parquet") -> Path:
    path = tmp_path / name
    df.to_parquet(path, index=False)
    return path


def split_json(tmp_path: Path, payload: dict, name: str = "split.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(payload))
    return path


def forward_split(n: int, keys: tuple[str, str] = ("train", "val")) -> dict[str, list[int]]:
    cut = int(n * 0.8)
    return {keys[0]: list(range(cut)), keys[1]: list(range(cut, n))}


# --------------------------------------------------------------------------- layout and pointers


def test_earlier_layout_loads_with_expansion_pointers_as_absolute_bars(tmp_path):
    df, X, pointers = legacy_frame()
    path = write(tmp_path, df)
    assert str(pq.read_schema(path).field("features").type) == "list<element: list<element: double>>"
    ds = load_windows(path)
    np.testing.assert_array_equal(ds.X, X.astype(np.float32))
    np.testing.assert_array_equal(ds.pointers, pointers)
    assert ds.window_id[0] == "100_exp_1"
    roles = dict(ds.columns)
    assert roles["pointers"].startswith("expansion_start/expansion_end: absolute")
    assert roles["ignored"] == "quality"


def test_inspect_prints_which_column_was_used_for_what(tmp_path):
    df, _, _ = legacy_frame()
    result = moola("data", "inspect", str(write(tmp_path, df)))
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "column: pointers │ expansion_start/expansion_end: absolute" in out
    assert "column: ignored │ quality" in out
    assert "column: time │ none (no bar_start column)" in out


def test_canonical_inner_pointers_are_never_read_silently(tmp_path):
    df, _, pointers = legacy_frame(pointers="canonical")
    path = write(tmp_path, df)
    # Unstated and every value <= 44: could be either convention, so it is an error, not a 30-bar shift.
    with pytest.raises(MoolaError, match=r"ambiguous.*--pointer-convention absolute"):
        load_windows(path)
    np.testing.assert_array_equal(load_windows(path, pointer_convention="inner").pointers, pointers)
    np.testing.assert_array_equal(
        load_windows(path, pointer_convention="absolute").pointers, pointers - INNER
    )
    result = moola("data", "inspect", str(path))
    assert result.exit_code == 2
    assert "pointer convention unknown" in helpers.one_line_error(result, "moola")
    result = moola("data", "inspect", str(path), "--pointer-convention", "inner")
    assert result.exit_code == 0, result.output
    assert "inner (stated by --pointer-convention)" in " ".join(result.stdout.split())


def test_pointer_convention_from_file_metadata_and_conflicts(tmp_path):
    df, _, pointers = legacy_frame(pointers="canonical")
    table = pq.read_table(write(tmp_path, df))
    meta = {**(table.schema.metadata or {}), b"moola.pointer_convention": b"inner"}
    path = tmp_path / "with_meta.parquet"
    pq.write_table(table.replace_schema_metadata(meta), path)
    ds = load_windows(path)
    np.testing.assert_array_equal(ds.pointers, pointers)
    assert "stated by file metadata" in dict(ds.columns)["pointers"]
    with pytest.raises(MoolaError, match="contradicts the file's metadata"):
        load_windows(path, pointer_convention="absolute")


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda df: df.assign(pointer_start=0, pointer_end=5), ("two competing pointer column pairs",)),
        (lambda df: df.drop(columns=["expansion_end"]), ("'expansion_start'", "without 'expansion_end'")),
        (
            lambda df: df.assign(expansion_end=df["expansion_end"].where(df.index != 3, 105)),
            ("'expansion_end'", "row 3 (window_id '103_exp_1')", "105 outside [0, 104]"),
        ),
    ],
)
def test_pointer_column_mistakes_are_one_line_errors(tmp_path, mutate, fragments):
    df, _, _ = legacy_frame()
    path = write(tmp_path, mutate(df))
    before = path.read_bytes()
    result = moola("data", "inspect", str(path))
    assert result.exit_code == 2
    line = helpers.one_line_error(result, "moola")
    assert all(f in line for f in fragments), line
    assert path.read_bytes() == before


def test_inner_pointer_outside_the_inner_window_is_an_error(tmp_path):
    df, _, _ = legacy_frame(pointers="canonical")
    df.loc[7, "pointer_end"] = 50  # bar 80: past the inner window's last bar (74)
    with pytest.raises(MoolaError, match=r"'pointer_end', row 7 .*50 outside \[0, 44\] \(inner convention\)"):
        load_windows(write(tmp_path, df), pointer_convention="inner")
    with pytest.raises(MoolaError, match="expansion_start/expansion_end are absolute bars by definition"):
        load_windows(write(tmp_path, legacy_frame()[0], "abs.parquet"), pointer_convention="inner")


def test_pickled_features_are_refused_with_the_conversion(tmp_path):
    df, _, _ = legacy_frame(8)
    df["features"] = [pickle.dumps(np.stack(cell)) for cell in df["features"]]
    path = write(tmp_path, df)
    before = path.read_bytes()
    result = moola("data", "inspect", str(path))
    assert result.exit_code == 2
    line = helpers.one_line_error(result, "moola")
    assert "column 'features': holds bytes (pickled arrays?)" in line and "pickle.loads(b)" in line
    assert path.read_bytes() == before


def test_null_feature_rows_are_named_or_dropped(tmp_path):
    df, X, _ = legacy_frame(20)
    df.loc[[4, 11], "features"] = None
    path = write(tmp_path, df)
    result = moola("data", "inspect", str(path))
    assert result.exit_code == 2
    line = helpers.one_line_error(result, "moola")
    assert "2 row(s) with null features: row 4 (window_id '104_exp_1'), row 11" in line
    assert "--drop-null-rows" in line
    result = moola("data", "inspect", str(path), "--drop-null-rows")
    assert result.exit_code == 0, result.output
    assert "(18, 105, 4)" in result.stdout
    ds = load_windows(path, drop_null_rows=True)
    np.testing.assert_array_equal(ds.X, np.delete(X, [4, 11], axis=0).astype(np.float32))


# --------------------------------------------------------------------------- split files


@pytest.mark.parametrize(
    "keys", [("train", "val"), ("train_idx", "val_idx"), ("train_indices", "test_indices")]
)
def test_split_file_key_spellings(tmp_path, keys):
    df, _, _ = legacy_frame()
    path = write(tmp_path, df)
    split = split_json(tmp_path, forward_split(len(df), keys))
    ctx = build_context(data=path, split_file=split)
    assert ctx.split_kind == "file"
    np.testing.assert_array_equal(ctx.train_idx, np.arange(32))
    np.testing.assert_array_equal(ctx.test_idx, np.arange(32, 40))
    assert f"key {keys[0]!r}" in ctx.split_reason
    assert leakage.split_rows(ctx) is None  # disjoint parts: no finding (the loader enforced it)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"train": [0, 1, 2, 40], "val": [5, 6]}, "index 40 (position 3) outside the data's rows 0..39"),
        ({"train": [0, 1, 1, 2], "val": [5, 6]}, "row 1 listed 2 times"),
        ({"train": [0, 1, 2, 3], "val": [3, 4]}, "row 3 is in both 'train' and 'val'"),
        ({"train": [0, 1, 2], "train_idx": [3], "val": [4]}, "keys 'train' and 'train_idx'"),
        ({"train": [0, 1, 2]}, "needs a train list and a val or test list"),
        ({"train": [0, 1.5], "val": [2]}, "expected a list of integer row indices"),
    ],
)
def test_bad_split_files_are_one_line_errors(tmp_path, payload, fragment):
    path = write(tmp_path, legacy_frame()[0])
    split = split_json(tmp_path, payload)
    result = diag("data", "--data", str(path), "--split-file", str(split), "--report-dir", str(tmp_path))
    assert result.exit_code == 2
    line = helpers.one_line_error(result, "moola-diag")
    assert f"--split-file {split}" in line and fragment in line, line


def test_judged_split_counts_overlapping_rows_as_leakage(tmp_path):
    path = write(tmp_path, legacy_frame()[0])
    payload = forward_split(40)
    payload["val"] += [3, 9]  # two training rows also listed for validation
    ctx = build_context(data=path, split_file=split_json(tmp_path, payload), judge_split=True)
    rows = leakage.split_rows(ctx)
    assert rows is not None and rows.status is Status.FAIL and rows.values["shared_rows"] == 2
    assert leakage.identical_windows(ctx).values["identical"] == 2
    assert "2 row(s) in both train and val" in ctx.split_reason


def test_time_order_from_rows_judges_the_split(tmp_path):
    path = write(tmp_path, legacy_frame()[0])
    forward = build_context(data=path, split_file=split_json(tmp_path, forward_split(40)), time_order="row")
    assert leakage.temporal_order(forward).status is Status.PASS
    # Rows order windows but say nothing about shared bars: no overlap verdict from row numbers.
    assert leakage.window_overlap(forward).status is Status.SKIP
    backward = {"train": list(range(8, 40)), "val": list(range(8))}
    ctx = build_context(data=path, split_file=split_json(tmp_path, backward, "b.json"), time_order="row")
    result = leakage.temporal_order(ctx)
    assert result.status is Status.FAIL and result.values["test_before_train"] == 8
    assert "row order" in result.evidence[0]
    # Without a split file, row order gives a temporal split by rows (the last 20% as test).
    ctx = build_context(data=path, time_order="row")
    assert ctx.split_kind == "temporal" and ctx.test_idx.min() == 32


def test_split_file_indices_refer_to_file_rows_after_dropping_nulls(tmp_path):
    df, _, _ = legacy_frame()
    df.loc[[2, 35], "features"] = None
    path = write(tmp_path, df)
    ctx = build_context(data=path, split_file=split_json(tmp_path, forward_split(40)), drop_null_rows=True)
    assert len(ctx.train_idx) == 31 and len(ctx.test_idx) == 7
    assert ctx.dataset.window_id[ctx.test_idx[0]] == "132_exp_1"
    assert "2 listed row(s) dropped as null" in ctx.split_reason


# --------------------------------------------------------------------------- a default that respects time


def test_no_time_information_random_split_warns_at_the_top_of_the_report(tmp_path):
    path = write(tmp_path, legacy_frame()[0])
    ctx = build_context(data=path)
    assert ctx.split_kind == "random" and "no bar_start" in ctx.split_reason
    warn = leakage.split_choice(ctx)
    assert warn is not None and warn.status is Status.WARN and "can leak" in warn.hint
    # The embedded synthetic set keeps its random split, without the warning (its windows never overlap).
    assert leakage.split_choice(build_context()) is None
    result = diag("data", "--data", str(path), "--report-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("split random: no bar_start, no --split-file")
    report = (tmp_path / "report.md").read_text()
    assert "split random: no bar_start" in report.split("| check |")[0]


def test_seed_reaches_the_checks_training_runs():
    # Issue 8: --seed used to reach only the split; the checks trained with TrainConfig.seed (1337).
    assert build_context(seed=7).config.seed == 7
    assert build_context(seed=0).config.seed == 0


# --------------------------------------------------------------------------- repeated ids, 3 classes


def _two_expansions(df: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """The same annotation exported once per expansion: same id, label and bars, other pointers."""
    copies = df.iloc[rows].copy()
    copies["expansion_start"] = copies["expansion_start"] + 2
    return pd.concat([df, copies], ignore_index=True)


def test_repeated_ids_load_as_a_data_finding_and_fail_leakage_across_the_split(tmp_path):
    df = _two_expansions(legacy_frame()[0], [5, 30])
    path = write(tmp_path, df)
    ds = load_windows(path)
    assert len(ds) == 42
    found = data_check.duplicate_ids(ds.window_id, ds.y, ds.pointers, ds.classes)
    assert found is not None and found.status is Status.WARN
    assert found.values == {"repeated_ids": 2, "rows": 4, "label_conflicts": 0, "pointer_conflicts": 2}
    # Row 40 copies row 5 (train), row 41 copies row 30 (train): keep both copies in train -> no leak.
    same_side = {"train": [*range(32), 40, 41], "val": list(range(32, 40))}
    ctx = build_context(data=path, split_file=split_json(tmp_path, same_side))
    assert leakage.shared_ids(ctx).status is Status.PASS
    straddle = {"train": list(range(32)), "val": [*range(32, 42)]}
    ctx = build_context(data=path, split_file=split_json(tmp_path, straddle, "s.json"))
    result = leakage.shared_ids(ctx)
    assert result.status is Status.FAIL and result.values["shared_ids"] == 2
    assert "105_exp_1" in result.evidence[0] and "130_exp_1" in result.evidence[0]


def test_three_classes_train_through_the_moola_cli_with_a_split_file(tmp_path):
    df, _, _ = legacy_frame(60, reversal=True)
    path = write(tmp_path, df)
    split = split_json(tmp_path, forward_split(60))
    args = ["train", "--data", str(path), "--split-file", str(split), "--n-epochs", "2"]
    result = moola(*args, "--predict-pointers", "--out-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    (run_dir,) = list((tmp_path / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["classes"] == ["consolidation", "retracement", "reversal"]
    assert config["config"]["split_file"] == str(split)
    assert (config["data"]["n_train"], config["data"]["n_val"]) == (48, 12)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[-1]["pointer_mae_bars"] is not None


# --------------------------------------------------------------------------- precomputed features


def relative_frame(n: int = 40, width: int = 11) -> pd.DataFrame:
    """As the earlier pipeline's make_relative_parquet.py writes it: nested lists + feature_type."""
    from moola.features import transform

    df, X, _ = legacy_frame(n)
    feats = transform(X.astype(np.float32), "relative11")[:, :, :width]
    df["features"] = [[bar.tolist() for bar in window] for window in feats.astype(np.float64)]
    df["feature_type"] = "relative_11d"
    return df


def test_precomputed_11d_features_train_and_are_trusted_by_the_data_check(tmp_path):
    path = write(tmp_path, relative_frame())
    ds = load_windows(path)
    assert ds.feature_type == "relative_11d" and ds.X.shape == (40, 105, 11)
    result = moola("train", "--data", str(path), "--n-epochs", "2", "--out-dir", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "random validation split can leak" in result.stderr
    ctx = build_context(data=path, split_file=split_json(tmp_path, forward_split(40)))
    found = {r.name: r for r in data_check.check_data(ctx)}
    assert "raw.layout" not in found and found["features.layout"].status is Status.PASS
    trusted = found["features.transform"]
    assert trusted.status is Status.PASS and "does not recompute relative11" in trusted.measured
    assert ctx.memo("features:relative11", lambda: None) is ctx.dataset.X  # nothing re-transformed


def test_precomputed_features_of_the_wrong_width_are_one_line_errors(tmp_path):
    path = write(tmp_path, relative_frame(width=7))
    result = diag("data", "--data", str(path), "--report-dir", str(tmp_path))
    assert result.exit_code == 2
    line = helpers.one_line_error(result, "moola-diag")
    assert "precomputed 'relative_11d' bars have 7 values" in line and "relative11 (11 values" in line
    result = moola("train", "--data", str(path), "--n-epochs", "1", "--out-dir", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert "7 values" in helpers.one_line_error(result, "moola")


# --------------------------------------------------------------------------- check-all end to end


def test_check_all_on_an_earlier_pipeline_file(tmp_path):
    """Every bullet at once: expansion pointers, a repeated id, a null row dropped, 3 classes, a split
    file judged in row order. Small (50 windows) so the instrumented training stays quick."""
    df, _, _ = legacy_frame(48, reversal=True)
    df = _two_expansions(df, [44, 45])  # rows 48, 49: second expansions of two late (val) windows
    df.loc[10, "features"] = None
    path = write(tmp_path, df)
    split = split_json(tmp_path, {"train": list(range(38)), "val": list(range(38, 50))})
    args = ["--data", str(path), "--split-file", str(split), "--time-order", "row", "--drop-null-rows"]
    result = diag("check-all", *args, "--device", "cpu", "--report-dir", str(tmp_path / "reports"))
    payload = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert result.exit_code == payload["exit_code"] in (0, 1), result.output
    by = {(r["check"], r["name"]): r for r in payload["results"]}
    assert not [k for k in by if k[1] == "crashed"], result.output
    assert payload["meta"]["split"] == "file"
    assert payload["meta"]["classes"] == ["consolidation", "retracement", "reversal"]
    assert "1 listed row(s) dropped as null" in payload["meta"]["split_reason"]
    assert by[("data", "duplicate_ids")]["status"] == "WARN"
    assert by[("data", "pointers")]["status"] == "PASS"
    assert "guaranteed by the loader" in by[("data", "pointers")]["measured"]
    assert by[("leakage", "shared_ids")]["status"] == "PASS"  # the copies stay on their original's side
    assert by[("leakage", "temporal_order")]["status"] == "PASS"
    assert by[("params", "params_per_sample")]["status"] in ("PASS", "WARN", "FAIL")
    assert by[("leakage", "majority_baseline")]["values"]["majority_share_test"] > 0
    assert result.stdout.splitlines()[0].startswith("split file: --split-file")


def test_dataset_subset_keeps_file_rows():
    ds = generate(10, seed=1)
    sub = replace(ds, row=np.arange(10, 20)).subset(np.array([2, 5]))
    np.testing.assert_array_equal(sub.file_rows, [12, 15])


def test_train_and_test_files_must_hold_the_same_features(tmp_path):
    raw = write(tmp_path, legacy_frame(20)[0], "raw.parquet")
    pre = write(tmp_path, relative_frame(20), "pre.parquet")
    with pytest.raises(MoolaError, match=r"--test .*pre.parquet: features are relative_11d, but --train"):
        build_context(train=raw, test=pre)
