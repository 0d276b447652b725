"""score-file's progress lines, as a log reads them."""

from __future__ import annotations

import io

from sie.jobs.manifest import Part
from sie.jobs.progress import LineProgress, progress_for


def test_a_line_per_part_names_its_rows_and_an_empty_part_none():
    stream = io.StringIO()
    progress = progress_for(stream)
    assert isinstance(progress, LineProgress), "a stream that is no terminal gets lines"
    progress.start(12, 0)
    progress.part_done(Part(index=0, start=0, stop=10, scored=9, rejected=1), seconds=0.5)
    progress.part_done(Part(index=1, start=10, stop=10, scored=0, rejected=0), seconds=0.1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "scoring 12 rows"
    assert lines[1] == "part 0: rows 0-9: 9 scored, 1 set aside at 18 pairs/s; 10/12 rows done"
    assert lines[2].startswith("part 1: no rows: 0 scored"), "an empty input logged 'rows 10-9'"
