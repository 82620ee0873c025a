"""Read a finished (or cut-short) training run into one ``RunRecord``, whoever wrote it.

Formats, one reader each:
- moola's own run directory (config.json, metrics.jsonl, split.json, model.pt, summary.json,
  findings.jsonl); schema 1 (before the audit fields: ``train_acc`` unlabelled) and schema 2;
- a Lightning ``CSVLogger`` metrics.csv (one row per logged step or epoch, blanks elsewhere);
- a Keras ``CSVLogger`` file (epoch from 0, ``loss``/``accuracy``/``val_loss``/``val_accuracy``);
- a JSON-lines file of per-epoch objects.
Every epoch is normalised to moola's keys; training figures from a log are running figures
(``train_*_running``): every one of these loggers averages over the epoch's steps as the weights change.
Unreadable input is one MoolaError line naming the file and line; nothing is ever unpickled here.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moola.errors import MoolaError

EPOCH_KEYS = (
    "train_loss_running",
    "train_acc_running",
    "val_loss",
    "val_acc",
    "val_macro_f1",
    "train_time_s",
    "epoch_time_s",
    "samples_per_s",
    "gpu_peak_mem_bytes",
    "gpu_util_pct",
)
# Names other loggers (and moola before schema 2) use for the same figures.
ALIASES = {
    "train_loss": "train_loss_running",
    "train_loss_epoch": "train_loss_running",
    "loss": "train_loss_running",
    "train_acc": "train_acc_running",
    "train_acc_epoch": "train_acc_running",
    "train_accuracy": "train_acc_running",
    "accuracy": "train_acc_running",
    "acc": "train_acc_running",
    "val_loss_epoch": "val_loss",
    "val_accuracy": "val_acc",
    "val_acc_epoch": "val_acc",
    "epoch_time": "epoch_time_s",
    "time": "epoch_time_s",
}


@dataclass
class RunRecord:
    path: Path
    kind: str  # "moola" | "lightning-csv" | "keras-csv" | "jsonl"
    epochs: list[dict[str, Any]]
    config: dict[str, Any] | None = None  # TrainConfig fields
    environment: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    split: dict[str, Any] | None = None
    model_path: Path | None = None
    live_findings: list[dict[str, Any]] | None = None
    schema: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.kind != "moola" or (self.summary is not None and self.model_path is not None)

    @property
    def model_name(self) -> str | None:
        return (self.config or {}).get("model")

    def kept_index(self) -> int | None:
        """0-based index of the epoch whose weights were kept (summary's best epoch), else None."""
        best = (self.summary or {}).get("best_epoch")
        for i, row in enumerate(self.epochs):
            if row.get("epoch") == best:
                return i
        return None


def _json_file(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except OSError as exc:
        raise MoolaError(f"{path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MoolaError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise MoolaError(f"{path}: expected a JSON object, got {type(payload).__name__}")
    return payload


def _number(value: Any, where: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MoolaError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MoolaError(f"{where}: expected a number, got {value!r}") from None


def normalise(raw: dict[str, Any], where: str, epoch_base: int = 1) -> dict[str, Any]:
    """One epoch's figures under moola's keys (numbers or None); the epoch counts from 1."""
    row = {k: _number(v, f"{where}, {k!r}") for k, v in raw.items() if k in EPOCH_KEYS}
    for key, value in raw.items():  # other loggers' names fill what the canonical ones left open
        name = ALIASES.get(key)
        if name is not None and name not in row:
            row[name] = _number(value, f"{where}, {key!r}")
    epoch = _number(raw.get("epoch"), f"{where}, 'epoch'")
    if epoch is None or not math.isfinite(epoch) or epoch != int(epoch):
        raise MoolaError(f"{where}: no integer 'epoch' field")
    row["epoch"] = int(epoch) - epoch_base + 1
    return row


def read_jsonl(path: Path, epoch_base: int = 1) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise MoolaError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise MoolaError(f"{path}: not a text file") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MoolaError(f"{path}, line {i}: not valid JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise MoolaError(f"{path}, line {i}: expected a JSON object per line")
        rows.append(normalise(raw, f"{path}, line {i}", epoch_base))
    if not rows:
        raise MoolaError(f"{path}: no epochs")
    return rows


def read_csv(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """Lightning (``step`` column; several rows per epoch, last value per column wins) or Keras
    (epoch from 0, one row per epoch)."""
    try:
        with path.open(newline="") as fh:
            table = list(csv.DictReader(fh))
    except OSError as exc:
        raise MoolaError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MoolaError(f"{path}: not a CSV file ({exc})") from None
    if not table or "epoch" not in table[0]:
        raise MoolaError(f"{path}: expected a CSV with an 'epoch' column and one row per epoch or step")
    lightning = "step" in table[0]
    merged: dict[int, dict[str, Any]] = {}
    for i, raw in enumerate(table, 2):  # line 1 is the header
        if None in raw:
            raise MoolaError(f"{path}, line {i}: more cells than header columns")
        row = normalise({k: v for k, v in raw.items() if v not in ("", None)}, f"{path}, line {i}", 0)
        merged.setdefault(row["epoch"], {}).update({k: v for k, v in row.items() if v is not None})
    return ("lightning-csv" if lightning else "keras-csv"), [merged[e] for e in sorted(merged)]


def _findings(path: Path) -> list[dict[str, Any]]:
    out = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            item = json.loads(line) if line.strip() else None
        except json.JSONDecodeError as exc:
            raise MoolaError(f"{path}, line {i}: not valid JSON ({exc.msg})") from None
        if item is not None:
            out.append(item if isinstance(item, dict) else {"message": str(item)})
    return out


def _moola(path: Path) -> RunRecord:
    config_file = _json_file(path / "config.json")
    if not isinstance(config_file.get("config"), dict):
        raise MoolaError(f"{path / 'config.json'}: no 'config' object (not a moola run directory)")
    epochs = read_jsonl(path / "metrics.jsonl")
    summary = _json_file(path / "summary.json") if (path / "summary.json").exists() else None
    split = _json_file(path / "split.json") if (path / "split.json").exists() else None
    live = None
    if (path / "findings.jsonl").exists():
        live = _findings(path / "findings.jsonl")
    elif config_file.get("metrics_schema", 1) >= 2:
        live = []  # the live rules ran and nothing fired
    return RunRecord(
        path=path,
        kind="moola",
        epochs=epochs,
        config=config_file["config"],
        environment=config_file.get("environment") or {},
        architecture=config_file.get("architecture") or {},
        data=config_file.get("data") or {},
        machine=config_file.get("machine"),
        summary=summary,
        split=split,
        model_path=path / "model.pt" if (path / "model.pt").exists() else None,
        live_findings=live,
        schema=int(config_file.get("metrics_schema", 1)),
    )


def read_run(path: Path) -> RunRecord:
    """The run at ``path``: a moola run directory, a directory holding metrics.csv, or a CSV / JSON-lines
    metrics file."""
    path = Path(path)
    if not path.exists():
        raise MoolaError(f"{path}: no such run directory or metrics file")
    if path.is_dir():
        if (path / "metrics.jsonl").exists() and (path / "config.json").exists():
            return _moola(path)
        if (path / "metrics.csv").exists():
            path = path / "metrics.csv"
        else:
            found = sorted(path.glob("*.jsonl")) + sorted(path.glob("*.csv"))
            if len(found) != 1:
                raise MoolaError(
                    f"{path}: not a run directory: expected config.json + metrics.jsonl (moola), "
                    "metrics.csv (Lightning CSVLogger), or one CSV / JSON-lines metrics file"
                )
            path = found[0]
    if path.suffix.lower() == ".csv" or path.suffix.lower() == ".log":
        kind, epochs = read_csv(path)
        return RunRecord(path=path, kind=kind, epochs=epochs)
    return RunRecord(path=path, kind="jsonl", epochs=read_jsonl(path))
