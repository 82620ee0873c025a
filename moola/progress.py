"""What ``moola train`` shows while it trains: a rich progress bar on a terminal, one plain line per
epoch otherwise (logs, pipes, CI), and each live finding once, the moment it fires.

Per epoch: epoch, running training loss, validation loss / accuracy / macro-F1, seconds per epoch against
the floor measured at the start, and on a GPU the epoch's torch peak memory and NVML utilization.
It reads the epoch's row only (already on the host), so it costs nothing per step.
"""

from __future__ import annotations

from typing import Any

_STYLE = {"FAIL": "bold red", "WARN": "yellow", "INFO": "cyan"}


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def epoch_status(row: dict[str, Any], floor_s: float | None) -> str:
    """``loss 0.612 | val 0.598 acc 0.743 f1 0.731 | 0.091 s/epoch (4.1x floor) | gpu 37.5 MiB 20%``."""
    parts = [f"loss {_num(row.get('train_loss_running'), '.3f')}"]
    if row.get("val_loss") is not None:
        parts.append(
            f"val {_num(row.get('val_loss'), '.3f')} acc {_num(row.get('val_acc'), '.3f')} "
            f"f1 {_num(row.get('val_macro_f1'), '.3f')}"
        )
    t = row.get("train_time_s")
    if t is not None:
        ratio = f" ({t / floor_s:.1f}x floor {floor_s * 1e3:.1f} ms)" if floor_s else ""
        parts.append(f"{t:.3f} s/epoch{ratio}")
    if row.get("gpu_peak_mem_bytes") is not None:
        util = row.get("gpu_util_pct")
        parts.append(
            f"gpu {row['gpu_peak_mem_bytes'] / 2**20:.1f} MiB" + ("" if util is None else f" {util:.0f}%")
        )
    return " | ".join(parts)


class EpochDisplay:
    """Training callback. ``live`` (the LiveRules) supplies the floor; ``finding`` is its notify hook."""

    def __init__(self, console: Any, model: str, n_epochs: int, warning: str = ""):
        self.console = console
        self.model = model
        self.n_epochs = n_epochs
        self.warning = warning
        self.live: Any = None
        self.progress: Any = None
        self.task: Any = None

    def on_train_start(self, state: Any) -> None:
        # Shown from the first epoch on, so set-up errors print alone, as one line.
        if self.warning:
            self.console.print(self.warning, markup=False)
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.task = self.progress.add_task(f"train {self.model}", total=self.n_epochs, status="")
            self.progress.start()

    def on_epoch_end(self, state: Any) -> None:
        row = state.history[-1]
        status = epoch_status(row, getattr(self.live, "floor_s", None))
        if self.progress is not None:
            self.progress.update(self.task, advance=1, status=status)
        else:
            self.console.print(
                f"epoch {row['epoch']}/{self.n_epochs} {status}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def finding(self, finding: Any) -> None:
        from rich.text import Text

        line = Text(f"moola: {finding.level} {finding.rule} (epoch {finding.epoch}): {finding.message}")
        line.stylize(_STYLE.get(finding.level, ""))
        self.console.print(line, soft_wrap=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
