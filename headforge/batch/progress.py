"""The live progress display of a batch: items done / failed / running / waiting and an ETA.

On a terminal one status line is redrawn in place (at most every ``refresh`` seconds) and each finished item is
printed above it; elsewhere (a log file, CI) each event is one line with the counts. The ETA divides the items left
by the rate of this run's finished items (items reused from an earlier run are not counted in the rate).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, refresh: float = 0.5):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.refresh = refresh
        self.start = time.monotonic()
        self.done = self.failed = self.reused = self.running = self.retrying = 0
        self.finished_here = 0
        self._drawn = 0.0
        self._width = 0

    def line(self) -> str:
        left = self.total - self.done - self.failed
        elapsed = time.monotonic() - self.start
        if self.finished_here and left:
            eta = f", ETA {duration(elapsed / self.finished_here * left)}"
        else:
            eta = "" if left else f", took {duration(elapsed)}"
        reused = f" ({self.reused} from before)" if self.reused else ""
        retry = f", {self.retrying} to retry" if self.retrying else ""
        waiting = max(0, left - self.running - self.retrying)
        return (f"batch: {self.done + self.failed}/{self.total} finished: {self.done} done{reused}, {self.failed} "
                f"failed; {self.running} running{retry}, {waiting} waiting{eta}")

    def event(self, text: str) -> None:
        """One finished (or retried) item: printed above the status line (elsewhere: with it, one line)."""
        if not self.tty:
            self.stream.write(f"{text}  [{self.line()}]\n")
            self.stream.flush()
            return
        self.stream.write("\r" + " " * self._width + "\r" + text + "\n")
        self.draw(force=True)

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < self.refresh:
            return
        self._drawn = now
        text = self.line()
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\n")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
