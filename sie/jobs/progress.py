"""How ``sie score-file`` shows its progress: a tqdm bar on a terminal, one plain line per part otherwise."""

from __future__ import annotations

from types import TracebackType
from typing import TextIO

from tqdm.auto import tqdm

from sie.jobs.manifest import Part


class _Display:
    """Used as a context manager, so that the display is closed however the job ends."""

    def close(self) -> None:
        """Ends the display; nothing to do unless a subclass holds something open."""

    def __enter__(self):
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class BarProgress(_Display):
    """A tqdm bar counting input rows, with pairs/s and the rows set aside so far."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bar: tqdm | None = None
        self.rejected = 0

    def start(self, total_rows: int | None, done_rows: int) -> None:
        self.bar = tqdm(total=total_rows, initial=done_rows, unit="pair", unit_scale=True, file=self.stream,
                        dynamic_ncols=True)

    def part_done(self, part: Part, seconds: float) -> None:
        self.rejected += part.rejected
        if self.rejected:
            self.bar.set_postfix(rejected=self.rejected, refresh=False)
        self.bar.update(part.stop - part.start)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LineProgress(_Display):
    """One line per part, for logs: rows done, this part's pairs/s, rows set aside."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.total: int | None = None
        self.done = 0

    def start(self, total_rows: int | None, done_rows: int) -> None:
        self.total, self.done = total_rows, done_rows
        rows = f"{total_rows:,} rows" if total_rows is not None else "rows"
        resumed = f", going on after the {done_rows:,} an earlier run scored" if done_rows else ""
        self._write(f"scoring {rows}{resumed}")

    def part_done(self, part: Part, seconds: float) -> None:
        self.done = part.stop
        of = f"/{self.total:,}" if self.total is not None else ""
        rejected = f", {part.rejected:,} set aside" if part.rejected else ""
        rows = f"rows {part.start:,}-{part.stop - 1:,}" if part.stop > part.start else "no rows"  # an empty input's
        self._write(f"part {part.index}: {rows}: {part.scored:,} scored{rejected} "
                    f"at {part.scored / max(seconds, 1e-9):,.0f} pairs/s; {self.done:,}{of} rows done")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


def progress_for(stream: TextIO) -> BarProgress | LineProgress:
    """A bar when ``stream`` is a terminal, lines otherwise."""
    return BarProgress(stream) if stream.isatty() else LineProgress(stream)
