"""Soak benchmark: N clients against `sie serve` for M minutes of varied score requests.

Starts the server (one worker, the flags given after ``--``), lets ``--clients`` threads send requests of 1-60
documents of 1-200 words for ``--minutes``, and reports per window of ``--window`` seconds: requests, pairs/s,
p50/p99 latency, errors, the worker's RSS; then the totals after warm-up, errors by status, and memory growth
(mean RSS over the last 30 s of the run against the last 30 s of the warm-up, and the peaks).

    python benchmarks/soak.py [--model M] [--clients 16] [--minutes 10] [--warmup 1] [--sample 1]
                              [--window 30] [--out DIR] [-- SERVE_FLAGS...]

Writes soak.txt (the table), soak.json (windows, memory samples, summary) and soak.png (pairs/s, p99 and RSS
over time) under --out (default: $OUT, else benchmarks/out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from sie import DEFAULT_MODEL
from sie.testing.server import ServerProcess
from sie.testing.soak import Soak, SoakResult
from arguments import count, positive
from timing import cpu_model

DEFAULT_OUT = Path(os.environ.get("OUT") or Path(__file__).resolve().parent / "out")


def report(result: SoakResult, warmup_s: float, window_s: float) -> tuple[str, dict]:
    """The table and the JSON summary of ``result``."""
    lines = [f"{'window s':>12} {'requests':>9} {'pairs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
             f"{'RSS MB':>8}"]
    windows = result.windows(window_s)
    for row in windows:
        lines.append(f"{row.start:5.0f}-{row.end:<6.0f} {row.requests:9d} {row.pairs_per_s:8.1f} {row.p50_ms:8.0f} "
                     f"{row.p99_ms:8.0f} {row.errors:7d} {row.rss_mb:8.0f}")
    p50, p99 = result.latency_ms(after_s=warmup_s)
    memory = result.memory_growth(warmup_s)
    summary = {
        "requests": len(result.answers),
        "errors_by_status": result.errors(),
        "after_warmup": {"pairs_per_s": result.pairs_per_s(after_s=warmup_s), "p50_ms": p50, "p99_ms": p99},
        "memory": asdict(memory),
    }
    lines += [
        f"requests {summary['requests']}, errors by status {summary['errors_by_status'] or 'none'}",
        f"after the {warmup_s:.0f}-s warm-up: {summary['after_warmup']['pairs_per_s']:.1f} pairs/s, "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        f"RSS (30-s means) {memory.base_mb:.0f} MB at the end of warm-up -> {memory.end_mb:.0f} MB at the end: "
        f"{memory.growth:+.1%}; peaks {memory.warmup_peak_mb:.0f} -> {memory.peak_mb:.0f} MB "
        f"({memory.peak_growth:+.1%})",
    ]
    return "\n".join(lines), {"summary": summary, "windows": [asdict(row) for row in windows],
                              "samples": [asdict(sample) for sample in result.samples]}


def plot(result: SoakResult, window_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = result.windows(window_s)
    middle = [(row.start + row.end) / 2 / 60 for row in windows]
    figure, (top, middle_axis, bottom) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    top.plot(middle, [row.pairs_per_s for row in windows], marker="o")
    top.set_ylabel("pairs/s")
    middle_axis.plot(middle, [row.p50_ms for row in windows], marker="o", label="p50")
    middle_axis.plot(middle, [row.p99_ms for row in windows], marker="o", label="p99")
    middle_axis.set_ylabel("latency (ms)")
    middle_axis.legend()
    bottom.plot([s.t / 60 for s in result.samples], [s.rss_mb for s in result.samples], label="worker RSS")
    if any(s.gpu_reserved_mb for s in result.samples):
        bottom.plot([s.t / 60 for s in result.samples], [s.gpu_reserved_mb for s in result.samples],
                    label="CUDA reserved")
    bottom.set_ylabel("MB")
    bottom.set_xlabel("minutes")
    bottom.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    serve_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--clients", type=count, default=16)
    parser.add_argument("--minutes", type=positive, default=10.0, help="load after the warm-up")
    parser.add_argument("--warmup", type=positive, default=1.0, help="minutes of warm-up (load too, reported apart)")
    parser.add_argument("--sample", type=positive, default=1.0, help="seconds between memory samples")
    parser.add_argument("--window", type=positive, default=30.0, help="seconds per table row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    warmup_s = args.warmup * 60
    server = ServerProcess(["--model", args.model, *serve_flags], env={"HF_HUB_OFFLINE": "1"})
    with server:
        result = Soak(server.port, args.model, clients=args.clients, seconds=warmup_s + args.minutes * 60,
                      sample_s=args.sample, seed=args.seed).run()
    table, data = report(result, warmup_s, args.window)
    header = (f"soak: {args.model}, {args.clients} clients, {args.warmup:g} min warm-up + {args.minutes:g} min, "
              f"serve flags {' '.join(serve_flags) or '(none)'}; {cpu_model()}, "
              f"{os.cpu_count()} cores, torch {torch.__version__}")
    print(header)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.txt").write_text(header + "\n" + table + "\n")
    data["run"] = {"model": args.model, "clients": args.clients, "warmup_min": args.warmup,
                   "minutes": args.minutes, "serve_flags": serve_flags, "seed": args.seed}
    (args.out / "soak.json").write_text(json.dumps(data, indent=1))
    plot(result, args.window, args.out / "soak.png")
    print(f"wrote {args.out / 'soak.txt'}, soak.json, soak.png")


if __name__ == "__main__":
    main()
