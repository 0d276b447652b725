"""Input files for the offline job tests, written from a pyarrow table, and their outputs read back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sie.testing import random_pairs


def pairs_table(seed: int, rows: int, max_words: int = 30) -> pa.Table:
    """``rows`` random pairs with an ``id`` column (its row number) and short documents: quick to score."""
    document_words = np.random.default_rng(seed).integers(0, max_words, size=rows)
    pairs = random_pairs(seed, document_words)
    return pa.table({"id": np.arange(rows), "query": [query for query, _ in pairs],
                     "document": [document for _, document in pairs]})


def write_input(path: Path, table: pa.Table) -> Path:
    """``table`` as ``path``'s format: Parquet, JSONL (one object per row) or CSV (a header, then text fields)."""
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as stream:
            stream.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in table.to_pylist())
    else:
        with open(path, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(table.column_names)
            writer.writerows(zip(*(table.column(name).to_pylist() for name in table.column_names), strict=True))
    return path


def read_output(path: Path) -> pa.Table:
    """A Parquet or JSONL output as a table (JSONL rows all have the same keys here)."""
    if path.suffix == ".parquet":
        return pq.read_table(path)
    with open(path, encoding="utf-8") as stream:
        return pa.Table.from_pylist([json.loads(line) for line in stream])


def predict_by_chunks(reranker, queries: list[str], documents: list[str], chunk_rows: int) -> np.ndarray:
    """What ``predict`` gives each pair when called on the same groups of rows as score-file's chunks."""
    pairs = list(zip(queries, documents, strict=True))
    return np.concatenate([reranker.predict(pairs[i:i + chunk_rows]) for i in range(0, len(pairs), chunk_rows)])
