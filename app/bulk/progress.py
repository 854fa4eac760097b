"""A one-line progress report on stderr: percentage, rows, rate and ETA.

Kept here rather than pulling in tqdm, which the service does not otherwise need. On a
terminal the line redraws in place a few times a second; in a log (not a terminal) a
new line is printed every ``log_interval`` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressLine:
    def __init__(
        self,
        total: int,
        done: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        log_interval: float = 10.0,
    ) -> None:
        self.total = max(total, 1)  # in the input's own unit: bytes (JSONL, CSV) or rows (Parquet)
        self.initial = done
        self.done = done
        self.rows = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty()
        self.interval = 0.25 if self.interactive else log_interval
        self.started = time.perf_counter()
        self._last_draw = 0.0
        self._drawn_done = -1
        self._lock = threading.Lock()

    def advance(self, amount: int, rows: int) -> None:
        """Account for one finished chunk: ``amount`` of the input consumed, ``rows`` embedded."""
        with self._lock:
            self.done += amount
            self.rows += rows
            now = time.perf_counter()
            if self.enabled and now - self._last_draw >= self.interval:
                self._last_draw = now
                self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.started, 1e-9)
        fraction = min(self.done / self.total, 1.0)
        rate = self.rows / elapsed
        progressed = self.done - self.initial
        remaining = self.total - self.done
        eta = format_duration(remaining * elapsed / progressed) if progressed > 0 else "?"
        width = 24
        filled = int(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        return (
            f"bulk [{bar}] {fraction:6.1%}  {self.rows:,} rows in {format_duration(elapsed)}"
            f"  {rate:,.0f} rows/s  ETA {eta}"
        )

    def _draw(self, now: float) -> None:
        self._drawn_done = self.done
        end = "\r" if self.interactive else "\n"
        self.stream.write(self.line(now) + end)
        self.stream.flush()

    def close(self, completed: bool = True) -> None:
        """Print the final line; ``completed`` means the whole input was read (100%, whatever was counted)."""
        with self._lock:
            if completed:
                self.done = self.total
            if self.enabled and (self.interactive or self.done != self._drawn_done):
                self.stream.write(self.line() + "\n")
                self.stream.flush()
