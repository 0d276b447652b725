"""Server benchmark: N concurrent clients against `sie serve`, next to the in-process engine on the same requests.

The baseline is the engine in this process, scoring the same requests one after another (``Reranker.score``),
measured in the same run, before and after the server lines (their mean); one-document requests alternate
between the two, so both see the same machine.
The server line sends them from N client threads, each with its own keep-alive connection, as msgpack the
way sie-sdk does; its batcher may merge requests from different clients.

  pairs/s   = pairs scored / wall time of the whole request list
  overhead  = server p50 - in-process p50 for a one-document request, one client (HTTP, msgpack, queueing)
  srv p50   = the server's own X-Total-Time (arrival in the worker to answer); infer p50 its X-Inference-Time

    python benchmarks/bench_server.py [--model M] [--device cpu|cuda] [--dtype float32|bfloat16|float16|int8]
                                      [--clients 1 4 16] [--requests 64] [--docs 20] [--words 60] [--quick]
                                      [--out DIR]

Prints a table and the server worker's RSS after the run, and writes server.json under --out (default: $OUT, else
benchmarks/out). The client threads share the machine with the server: on a small CPU they take cycles the server
would otherwise use.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sie import DEFAULT_MODEL, Reranker
from sie.testing.server import HttpClient, ServerProcess
from sie.testing.soak import read_gauge
from sie.testing.words import random_text
from arguments import count
from timing import device_name

DEFAULT_OUT = Path(os.environ.get("OUT") or Path(__file__).resolve().parent / "out")


@dataclass
class Row:
    """One measured configuration; ``ratio`` is this line's pairs/s over the in-process pairs/s."""

    mode: str
    clients: int
    requests: int
    docs: int
    pairs_per_s: float
    p50_ms: float
    p99_ms: float
    ratio: float = 1.0
    server_p50_ms: float | None = None  # X-Total-Time: from the request's arrival in the worker to its answer
    inference_p50_ms: float | None = None  # X-Inference-Time: the batch that carried it


def make_requests(rng: np.random.Generator, count: int, docs: int, words: int) -> list[dict]:
    """``count`` score requests of ``docs`` documents of about ``words`` words, with ids (sie-sdk Items)."""
    return [{"query": {"id": f"q{i}", "text": random_text(rng, 8)},
             "items": [{"id": f"d{j}", "text": random_text(rng, int(rng.integers(max(1, words // 2), words * 3 // 2 + 1)))}
                       for j in range(docs)]} for i in range(count)]


def _summary(mode: str, clients: int, requests: list[dict], wall_s: float, latencies: list[float]) -> Row:
    pairs = sum(len(request["items"]) for request in requests)
    latency_ms = np.array(latencies) * 1000
    return Row(mode, clients, len(requests), len(requests[0]["items"]), pairs / wall_s,
               float(np.percentile(latency_ms, 50)), float(np.percentile(latency_ms, 99)))


def time_in_process(reranker: Reranker, requests: list[dict]) -> tuple[float, list[float]]:
    """The baseline: each request scored in turn by the engine in this process; (wall seconds, latencies)."""
    for request in requests[:2]:  # warm-up
        reranker.score(request["query"], request["items"])
    latencies = []
    started = time.perf_counter()
    for request in requests:
        began = time.perf_counter()
        reranker.score(request["query"], request["items"])
        latencies.append(time.perf_counter() - began)
    return time.perf_counter() - started, latencies


def _post(client: HttpClient, path: str, request: dict) -> tuple[float, float, float]:
    """Seconds for one request, and the server's own X-Total-Time and X-Inference-Time (milliseconds)."""
    began = time.perf_counter()
    reply = client.post(path, request, accept="application/msgpack")
    if reply.status != 200:
        raise RuntimeError(f"server answered {reply.status}: {reply.body[:300]!r}")
    return (time.perf_counter() - began, float(reply.headers["x-total-time"]),
            float(reply.headers["x-inference-time"]))


def _server_row(clients: int, requests: list[dict], wall_s: float, timings: np.ndarray) -> Row:
    row = _summary("server", clients, requests, wall_s, list(timings[:, 0]))
    row.server_p50_ms, row.inference_p50_ms = (float(value) for value in np.median(timings[:, 1:], axis=0))
    return row


def run_server(client: HttpClient, path: str, requests: list[dict], clients: int) -> Row:
    """The request list sent by ``clients`` threads at once (each takes the next request when done)."""
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda request: _post(client, path, request), requests[:clients]))  # warm-up, connections
        started = time.perf_counter()
        timings = np.array(list(pool.map(lambda request: _post(client, path, request), requests)))
        wall_s = time.perf_counter() - started
    return _server_row(clients, requests, wall_s, timings)


def run_interleaved(reranker: Reranker, client: HttpClient, path: str, requests: list[dict]) -> tuple[Row, Row]:
    """Each request in process, then through the server, in turn: both see the same machine conditions."""
    in_process, served = [], []
    for request in requests[:5]:  # warm-up
        reranker.score(request["query"], request["items"])
        _post(client, path, request)
    for request in requests:
        began = time.perf_counter()
        reranker.score(request["query"], request["items"])
        in_process.append(time.perf_counter() - began)
        served.append(_post(client, path, request))
    timings = np.array(served)
    return (_summary("in-process", 1, requests, sum(in_process), in_process),
            _server_row(1, requests, float(timings[:, 0].sum()), timings))


def print_table(rows: list[Row], overhead_ms: float, device: str) -> None:
    print(f"device: {device}")
    print(f"{'mode':<11} {'clients':>7} {'requests':>8} {'docs':>5} {'pairs/s':>9} {'vs in-proc':>10} "
          f"{'p50 ms':>9} {'p99 ms':>9} {'srv p50':>9} {'infer p50':>9}")
    for row in rows:
        server_side = "" if row.server_p50_ms is None else f" {row.server_p50_ms:>9.2f} {row.inference_p50_ms:>9.2f}"
        print(f"{row.mode:<11} {row.clients:>7} {row.requests:>8} {row.docs:>5} {row.pairs_per_s:>9.1f} "
              f"{row.ratio:>9.2f}x {row.p50_ms:>9.2f} {row.p99_ms:>9.2f}{server_side}")
    print(f"per-request overhead at p50, 1 document, 1 client: {overhead_ms:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16", "int8"), default=None,
                        help="the engine's and the server's dtype (default: the engine's)")
    parser.add_argument("--clients", type=count, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=count, default=64, help="requests per configuration")
    parser.add_argument("--docs", type=count, default=20, help="documents per request")
    parser.add_argument("--words", type=count, default=60, help="mean words per document")
    parser.add_argument("--latency-requests", type=count, default=200, help="one-document requests for the overhead")
    parser.add_argument("--quick", action="store_true", help="few small requests: a smoke test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.quick:
        args.requests, args.docs, args.words, args.latency_requests = 16, 4, 20, 30

    rng = np.random.default_rng(0)
    requests = make_requests(rng, args.requests, args.docs, args.words)
    singles = make_requests(rng, args.latency_requests, 1, args.words)
    reranker = Reranker(args.model, device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None)
    device = device_name(reranker.device)

    # The baseline runs before and after the server lines and counts as their mean, so that a machine whose
    # load drifts during the run (a shared CI runner) tilts neither side.
    before = time_in_process(reranker, requests)
    path = f"/v1/score/{args.model}"
    dtype_flag = ["--dtype", args.dtype] if args.dtype else []
    with ServerProcess(["--model", args.model, "--device", args.device, *dtype_flag,
                        "--threads", str(max(args.clients) * 2)], env={"HF_HUB_OFFLINE": "1"}) as server:
        served = [run_server(server.client, path, requests, clients) for clients in args.clients]
        single_baseline, single = run_interleaved(reranker, server.client, path, singles)
        server_rss_mb = read_gauge(server.client.get("/metrics").body.decode(), "sie_memory_bytes") / 1e6
    after = time_in_process(reranker, requests)
    baseline = _summary("in-process", 1, requests, (before[0] + after[0]) / 2, before[1] + after[1])
    for row in served:
        row.ratio = row.pairs_per_s / baseline.pairs_per_s
    rows = [baseline, *served]
    single.ratio = single.pairs_per_s / single_baseline.pairs_per_s
    rows += [single_baseline, single]
    overhead_ms = single.p50_ms - single_baseline.p50_ms
    dtype = str(reranker.dtype).removeprefix("torch.")
    print_table(rows, overhead_ms, f"{device}, {dtype}")
    print(f"server worker RSS after the run: {server_rss_mb:,.0f} MB")

    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": device, "dtype": dtype, "model": args.model, "torch_threads": torch.get_num_threads(),
              "overhead_p50_ms": overhead_ms, "server_rss_mb": server_rss_mb, "rows": [asdict(row) for row in rows]}
    (args.out / "server.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
