"""Progress of a batch job: a rich bar on a terminal, plain lines elsewhere (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(self, total: int | None, *, stream: TextIO | None = None, every: float = 5.0):
        self.total = total
        self.stream = stream or sys.stderr
        self.every = every
        self.done = 0
        self._start = time.perf_counter()
        self._last = self._start
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                TextColumn("scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("rows"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._bar.start()
            self._task = self._bar.add_task("scoring", total=self.total, rate="")
        return self

    def advance(self, rows: int) -> None:
        self.done += rows
        now = time.perf_counter()
        rate = self.done / max(now - self._start, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{rate:,.0f} rows/s")
        elif now - self._last >= self.every:
            self._last = now
            self.stream.write(self.line(rate, now) + "\n")
            self.stream.flush()

    def line(self, rate: float, now: float) -> str:
        total = f"/{self.total:,}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {max(self.total - self.done, 0) / rate:,.0f} s"
        return f"scored {self.done:,}{total} rows, {rate:,.0f} rows/s{eta}"

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
