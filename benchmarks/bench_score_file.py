"""``sie score-file`` throughput against in-process ``Reranker.predict`` on the same pairs, in one run.

The pairs are the fidelity set's (31 natural English queries x their 10-12 documents), cycled to ``--pairs``. Lines:
``predict`` on all pairs in one call (the yardstick), then the file job on the same pairs written as Parquet
(Parquet out) and as JSONL (JSONL out), read in chunks of ``--chunk-rows``. A job's time covers everything but
loading the model, which both sides share: reading, validating, scoring, writing and syncing each part and its
manifest, joining the parts into the output and removing them. Target: a job reaches >= 90% of predict's pairs/s.

    python benchmarks/bench_score_file.py [--pairs 2048] [--chunk-rows 512] [--repeats 3] [--device cpu]
        [--dtype float32] [--model M] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

import sie
from sie.jobs.score_file import ScoreFileOptions, score_file
from sie.dtypes import DTYPES
from sie.testing.fidelity import fidelity_queries
from arguments import count
from timing import cpu_model, seconds_of

TARGET = 0.9


def fidelity_pairs(count: int) -> pa.Table:
    """``count`` (query, document) rows from the fidelity set, cycled, with an ``id`` column."""
    pairs = itertools.islice(itertools.cycle([(entry["query"], document) for entry in fidelity_queries()
                                              for document in entry["documents"]]), count)
    queries, documents = zip(*pairs, strict=True)
    return pa.table({"id": range(count), "query": queries, "document": documents})


def write_inputs(table: pa.Table, folder: Path) -> dict[str, Path]:
    """``table`` as ``pairs.parquet`` and ``pairs.jsonl`` in ``folder``."""
    parquet, jsonl = folder / "pairs.parquet", folder / "pairs.jsonl"
    pq.write_table(table, parquet)
    with open(jsonl, "w", encoding="utf-8") as stream:
        stream.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in table.to_pylist())
    return {"parquet": parquet, "jsonl": jsonl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sie.DEFAULT_MODEL)
    parser.add_argument("--pairs", type=count, default=2048)
    parser.add_argument("--chunk-rows", type=count, default=512, help="rows per part (sie's default is 4096)")
    parser.add_argument("--repeats", type=count, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="default: the engine's (sie.reranker.default_dtype)")
    parser.add_argument("--threads", type=count, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    reranker = sie.Reranker(args.model, device=device, dtype=DTYPES.get(args.dtype))
    table = fidelity_pairs(args.pairs)
    pairs = list(zip(table["query"].to_pylist(), table["document"].to_pylist(), strict=True))
    lengths = reranker.encode([query for query, _ in pairs], [document for _, document in pairs]).lengths
    options = ScoreFileOptions(chunk_rows=args.chunk_rows, overwrite=True)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        inputs = write_inputs(table, folder)
        (folder / "warm-up").mkdir()
        warm_up = write_inputs(table.slice(0, 128), folder / "warm-up")
        engines: dict[str, Callable[[], object]] = {"predict (in process, one call)": lambda: reranker.predict(pairs)}
        for fmt, path in inputs.items():
            engines[f"score-file {fmt} -> {fmt}"] = (
                lambda path=path, fmt=fmt: score_file(path, folder / f"scores.{fmt}", reranker, options))
        reranker.predict(pairs[:128])  # warm-up: first-call allocations and lazy initialisation
        for fmt, path in warm_up.items():
            score_file(path, folder / f"warm-up-scores.{fmt}", reranker, options)
        # Round-robin repeats: whatever else the machine does at a moment weighs on every line alike.
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.repeats):
            for name, run in engines.items():
                times[name].append(seconds_of(run, device))

    seconds = {name: statistics.median(samples) for name, samples in times.items()}
    yardstick = seconds.pop("predict (in process, one call)")
    print(f"# {args.pairs} pairs of {lengths.min()}-{lengths.max()} tokens (mean {lengths.mean():.0f}), {args.model}, "
          f"{device}, {reranker.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{cpu_model()}; chunks of {args.chunk_rows} rows, median of {args.repeats}")
    print(f"{'line':<34} {'seconds':>8} {'pairs/s':>9} {'x predict':>10}")
    for name, value in {"predict (in process, one call)": yardstick, **seconds}.items():
        print(f"{name:<34} {value:>8.2f} {args.pairs / value:>9.1f} {yardstick / value:>10.3f}")
    worst = min(yardstick / value for value in seconds.values())
    print(f"# slowest job at {worst:.3f}x predict: target >= {TARGET} {'met' if worst >= TARGET else 'MISSED'}")

    if args.json:
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(), "machine": cpu_model(),
            "device": str(device), "dtype": str(reranker.dtype), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "model": args.model, "pairs": args.pairs,
            "chunk_rows": args.chunk_rows, "lengths": [int(lengths.min()), int(lengths.max())],
            "predict_seconds": yardstick, "seconds": seconds,
            "ratio_to_predict": {name: yardstick / value for name, value in seconds.items()},
        }, indent=2))


if __name__ == "__main__":
    main()
