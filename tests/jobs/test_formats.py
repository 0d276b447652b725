"""Chunked reading: chunks cover fixed row ranges whatever the file's layout, from any chunk boundary."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from sie.jobs.formats import read_chunks
from tests.jobs.files import pairs_table, write_input


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_chunks_are_the_same_row_ranges_from_any_chunk_boundary(rng, fmt, tmp_path):
    rows, chunk_rows = int(rng.integers(200, 400)), int(rng.integers(10, 60))
    table = pairs_table(int(rng.integers(2**31)), rows)
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "parquet":  # row groups that do not line up with the chunks
        pq.write_table(table, path, row_group_size=int(rng.integers(7, 100)))
    else:
        write_input(path, table)
    start = chunk_rows * int(rng.integers(0, rows // chunk_rows + 1))
    chunks = list(read_chunks(path, fmt, chunk_rows, start))

    boundaries = list(range(start, rows, chunk_rows))
    assert [(chunk.start, chunk.stop) for chunk in chunks] == [(b, min(b + chunk_rows, rows)) for b in boundaries]
    for chunk in chunks:
        assert chunk.row_numbers == list(range(chunk.start, chunk.stop)) and not chunk.rejects
        assert chunk.rows.column("document") == table["document"].to_pylist()[chunk.start:chunk.stop]
        if chunk.lines is not None:  # a header line for CSV; JSONL lines are rows
            assert chunk.lines == [row + 1 + (fmt == "csv") for row in chunk.row_numbers]
