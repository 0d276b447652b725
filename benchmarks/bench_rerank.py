"""End-to-end reranking throughput: sie against the padded stacks, in one run on one machine.

One query x N documents of mixed length (20-250 document tokens by default) on the default model.
Lines: sie (fp32, bf16, and int8 on a CPU), transformers padded (batch 32, fp32), sentence-transformers
``CrossEncoder.predict`` (fp32, when installed), and with ``--onnx`` ONNX Runtime on an int8 ONNX file of the same
model (batch 32, padded, as the usual ONNX stacks run it). Each line reports pairs/s, the ratio to the baselines,
and the useful GFLOP/s (unpadded FLOPs / time) next to the machine's matmul peak measured in the same run. The bf16
and int8 lines are checked for the same top-1 document as fp32 on every query of the fidelity set
(sie/testing/data/fidelity_set.json).

    python benchmarks/bench_rerank.py [--documents 100] [--repeats 5] [--device cpu] [--onnx model.onnx]
        [--max-batch-tokens N] [--compare-batch-tokens N ...] [--sie-only] [--profile N] [--json out.json]

With ``--model-shape`` (``qwen3-0.6b``, ``qwen2-1.5b``, ... from ``sie.testing.SHAPES``) it measures a decoder
reranker instead: a random checkpoint of that shape read through its recipe (Qwen3: qwen3-reranker; Qwen2:
mxbai-rerank-v2), one query x N documents of 20-250 words, sie against transformers' causal LM on left-padded
batches of 16 (SDPA, ``logits_to_keep=1``), both tokenizing as part of the timed call, in ``--dtype``.

    python benchmarks/bench_rerank.py --model-shape qwen3-0.6b [--dtype bfloat16] [--documents 100]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

import sie
from sie.testing import padded_logits
from sie.testing.fidelity import fidelity_queries, onnx_runtime_session
from arguments import count
from timing import cpu_model, encoder_flops, attention_share, matmul_peak, op_profile, peaks_text, seconds_of

QUERY = "how do vaccines train the immune system to recognise a virus"

try:
    from sentence_transformers import CrossEncoder

    HAS_SENTENCE_TRANSFORMERS = True
except ImportError:
    HAS_SENTENCE_TRANSFORMERS = False


def make_documents(tokenizer, count: int, min_tokens: int, max_tokens: int, seed: int) -> list[str]:
    """Documents cut from the fidelity set's text at uniformly drawn token lengths."""
    queries = fidelity_queries()
    words = " ".join(doc for entry in queries for doc in entry["documents"]).split()
    rng = np.random.default_rng(seed)
    documents = []
    for target in rng.integers(min_tokens, max_tokens + 1, size=count):
        start = int(rng.integers(0, len(words) - 2 * max_tokens))
        text = " ".join(words[start:start + 2 * max_tokens])
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True,
                             max_length=max_tokens)
        documents.append(text[: encoding["offset_mapping"][int(target) - 1][1]])
    return documents


def transformers_padded(path: Path, device: torch.device, dtype: torch.dtype, batch_size: int = 32):
    """The usual stack: batches of 32 in input order, each padded to its longest pair."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(device).eval()
    return lambda pairs: padded_logits(model, tokenizer, pairs, device, 512, batch_size)


def onnx_runtime_padded(onnx_path: Path, model_path: Path, batch_size: int = 32):
    """ONNX Runtime on ``onnx_path`` (inputs ``input_ids``, ``token_type_ids``, ``attention_mask``; output
    ``logits``), batches of 32 in input order, each padded to its longest pair."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    session = onnx_runtime_session(onnx_path)

    def run(pairs):
        logits = []
        for start in range(0, len(pairs), batch_size):
            queries, documents = zip(*pairs[start:start + batch_size], strict=True)
            inputs = tokenizer(list(queries), list(documents), truncation="only_second", max_length=512,
                               padding=True, return_tensors="np", return_token_type_ids=True)
            logits.append(session.run(["logits"], {name: inputs[name].astype(np.int64) for name in
                                                   ("input_ids", "token_type_ids", "attention_mask")})[0][:, 0])
        return np.concatenate(logits)

    return run


def top1_agreement(fp32: sie.Reranker, other: sie.Reranker) -> tuple[int, int]:
    """(queries whose top-1 document is the same in ``other``'s dtype as in fp32, queries)."""
    queries = fidelity_queries()
    same = sum(
        fp32.rerank(entry["query"], entry["documents"], top_k=1)[0]["index"]
        == other.rerank(entry["query"], entry["documents"], top_k=1)[0]["index"]
        for entry in queries
    )
    return same, len(queries)


def profile_sie_lines(engines: dict[str, Callable[[], object]], device: torch.device,
                      top: int) -> dict[str, dict[str, float]]:
    """Profiles one call of each sie line (none when ``top`` is 0) and prints its ``top`` costliest operators and
    the attention operators' share of them all. Returns each line's seconds by operator."""
    profiles = {name: op_profile(run, device) for name, run in engines.items() if top and name.startswith("sie")}
    for name, by_op in profiles.items():
        total = sum(by_op.values())
        print(f"# profile of one call, {name}: {total * 1e3:.0f} ms in torch operators, "
              f"attention {attention_share(by_op):.0%}")
        for op, s in list(by_op.items())[:top]:
            print(f"#   {op:<58} {s * 1e3:>8.1f} ms {s / total:>6.1%}")
    return profiles


def decoder_bench(args: argparse.Namespace) -> None:
    """sie vs transformers on a random decoder reranker of ``args.model_shape``, in ``args.dtype``."""
    import tempfile

    from transformers import AutoModelForCausalLM

    from sie.testing import make_random_checkpoint, random_text
    from sie.testing.decoders import left_padded_logits, mxbai_rerank_v2_ids, mxbai_template_length, qwen3_reranker_ids

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    arch = "qwen3" if args.model_shape.startswith("qwen3") else "qwen2"
    recipe = "qwen3-reranker" if arch == "qwen3" else "mxbai-rerank-v2"
    rng = np.random.default_rng(args.seed)
    query = random_text(rng, 8)
    documents = [random_text(rng, int(words)) for words in rng.integers(20, 251, size=args.documents)]
    with tempfile.TemporaryDirectory() as folder:
        path = make_random_checkpoint(Path(folder) / args.model_shape, arch, shape=args.model_shape,
                                      max_position_embeddings=32768, seed=args.seed)
        reranker = sie.Reranker(str(path), device=device, dtype=dtype, recipe=recipe)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    score_ids = reranker.tokenizer.score_token_ids
    budget = reranker.max_length - (mxbai_template_length(tokenizer) if arch == "qwen2" else 0)

    def transformers_run():
        if arch == "qwen3":
            sequences = [qwen3_reranker_ids(tokenizer, query, d, None, budget) for d in documents]
        else:
            sequences = [mxbai_rerank_v2_ids(tokenizer, query, d, None, budget) for d in documents]
        return left_padded_logits(model, sequences, tokenizer.pad_token_id, score_ids, batch_size=16)

    engines = {f"sie {args.dtype}": lambda: reranker.predict([(query, d) for d in documents]),
               f"transformers left-padded {args.dtype} (batch 16)": transformers_run}
    lengths = reranker.encode(query, documents).lengths
    for run in engines.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, run in engines.items():
            times[name].append(seconds_of(run, device))
    seconds = {name: statistics.median(samples) for name, samples in times.items()}
    baseline = seconds[f"transformers left-padded {args.dtype} (batch 16)"]
    print(f"# {args.model_shape} ({recipe}), {args.documents} pairs of {lengths.min()}-{lengths.max()} tokens "
          f"(mean {lengths.mean():.0f}), {device}, {args.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"{'engine':<48} {'pairs/s':>9} {'x transformers':>15}")
    for name, value in seconds.items():
        print(f"{name:<48} {args.documents / value:>9.2f} {baseline / value:>15.2f}")
    profiles = profile_sie_lines(engines, device, args.profile)

    if args.json:
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(), "machine": cpu_model(),
            "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "shape": args.model_shape, "recipe": recipe, "dtype": args.dtype, "pairs": args.documents,
            "lengths": [int(lengths.min()), int(lengths.max())],
            "pairs_per_s": {name: args.documents / value for name, value in seconds.items()},
            "profiles": profiles,
        }, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=sie.DEFAULT_MODEL)
    parser.add_argument("--documents", type=count, default=100)
    parser.add_argument("--min-tokens", type=count, default=20)
    parser.add_argument("--max-tokens", type=count, default=250)
    parser.add_argument("--repeats", type=count, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=count, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--max-batch-tokens", type=count,
                        help="sie's token budget per micro-batch (default: the engine's)")
    parser.add_argument("--compare-batch-tokens", type=count, nargs="+", default=[], metavar="N",
                        help="also run each sie line with these token budgets, in the same rounds")
    parser.add_argument("--sie-only", action="store_true",
                        help="no baseline lines: the process holds sie alone, as a server or an application does")
    parser.add_argument("--onnx", type=Path, help="an int8 ONNX file of --model: adds an ONNX Runtime line")
    parser.add_argument("--model-shape", help="a decoder shape of sie.testing.SHAPES, e.g. qwen3-0.6b (see above)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile one call of each sie line and print its N costliest torch operators, "
                             "with the share of attention's operators (names holding 'attention' or 'attn')")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the --model-shape benchmark")
    args = parser.parse_args()
    if args.min_tokens > args.max_tokens:  # refused before the models load, not in a traceback after
        parser.error(f"--min-tokens {args.min_tokens} is above --max-tokens {args.max_tokens}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_shape:
        decoder_bench(args)
        return

    device = torch.device(args.device)
    reduced = torch.bfloat16
    budget = args.max_batch_tokens
    fp32 = sie.Reranker(args.model, device=device, dtype=torch.float32, max_batch_tokens=budget)
    low = sie.Reranker(args.model, device=device, dtype=reduced, max_batch_tokens=budget)
    config = AutoConfig.from_pretrained(fp32.path)
    tokenizer = AutoTokenizer.from_pretrained(fp32.path)
    documents = make_documents(tokenizer, args.documents, args.min_tokens, args.max_tokens, args.seed)
    lengths = fp32.encode(QUERY, documents).lengths
    flops = encoder_flops(config, lengths)
    pairs = [(QUERY, document) for document in documents]

    engines: dict[str, Callable[[], object]] = {
        "sie fp32": lambda: fp32.rerank(QUERY, documents),
        "sie bf16": lambda: low.rerank(QUERY, documents),
    }
    if low.backends["attention"] != "torch":  # the same engine on PyTorch's SDPA: what the faster kernel gains
        sdpa = sie.Reranker(args.model, device=device, dtype=reduced, max_batch_tokens=budget, backend="torch")
        engines["sie bf16 (torch attention)"] = lambda: sdpa.rerank(QUERY, documents)
    int8 = (sie.Reranker(args.model, device=device, dtype=torch.int8, max_batch_tokens=budget)
            if device.type == "cpu" else None)
    if int8 is not None:
        engines["sie int8"] = lambda: int8.rerank(QUERY, documents)
    for tokens in args.compare_batch_tokens:
        for name, reranker in (("fp32", fp32), ("bf16", low), ("int8", int8)):
            if reranker is not None:
                other = sie.Reranker(args.model, device=device, dtype=reranker.dtype, max_batch_tokens=tokens)
                engines[f"sie {name} ({tokens} tokens)"] = functools.partial(other.rerank, QUERY, documents)
    if not args.sie_only:
        padded = transformers_padded(fp32.path, device, torch.float32)
        engines["transformers padded fp32 (batch 32)"] = lambda: padded(pairs)
    if HAS_SENTENCE_TRANSFORMERS and not args.sie_only:
        cross_encoder = CrossEncoder(str(fp32.path), device=str(device))
        engines["sentence-transformers fp32 (batch 32)"] = lambda: cross_encoder.predict(pairs, batch_size=32)
    if args.onnx and not args.sie_only:
        onnx_runtime = onnx_runtime_padded(args.onnx, fp32.path)
        engines["ONNX Runtime int8 file (batch 32)"] = lambda: onnx_runtime(pairs)

    for run in engines.values():
        run()  # warm-up: first-call allocations and lazy initialisation
    # Round-robin repeats: whatever else the machine does at a moment weighs on every engine alike.
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, run in engines.items():
            times[name].append(seconds_of(run, device))
    results = {}
    for name, samples in times.items():
        seconds = statistics.median(samples)
        results[name] = {"seconds": seconds, "pairs_per_s": len(documents) / seconds, "gflops": flops / seconds / 1e9}

    peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(reduced, device)}
    same_top1, num_queries = top1_agreement(fp32, low)
    int8_top1 = top1_agreement(fp32, int8)[0] if int8 is not None else None

    print(f"# {args.documents} pairs, pair lengths {lengths.min()}-{lengths.max()} tokens (mean {lengths.mean():.0f}), "
          f"{args.model}, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{fp32.max_batch_tokens} tokens per micro-batch")
    print(f"# measured matmul peak: {peaks_text(peaks)}")
    baselines = [name for name in results if not name.startswith("sie")]
    header = f"{'engine':<40} {'pairs/s':>9} {'GFLOP/s':>8}" + "".join(f" {'x ' + b.split()[0]:>16}" for b in baselines)
    print(header)
    for name, result in results.items():
        ratios = "".join(f" {result['pairs_per_s'] / results[b]['pairs_per_s']:>16.2f}" for b in baselines)
        print(f"{name:<40} {result['pairs_per_s']:>9.1f} {result['gflops']:>8.1f}{ratios}")
    print(f"# bf16 top-1 equals fp32 top-1 on {same_top1}/{num_queries} fidelity queries")
    if int8 is not None:
        print(f"# int8 top-1 equals fp32 top-1 on {int8_top1}/{num_queries} fidelity queries; int8 is "
              f"{results['sie int8']['pairs_per_s'] / results['sie bf16']['pairs_per_s']:.2f}x bf16")

    profiles = profile_sie_lines(engines, device, args.profile)

    if args.json:
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(), "machine": cpu_model(),
            "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "pairs": args.documents, "lengths": [int(lengths.min()), int(lengths.max())], "peaks": peaks,
            "results": results, "bf16_top1_same": [same_top1, num_queries],
            "int8_top1_same": None if int8 is None else [int8_top1, num_queries],
            "profiles": profiles,
        }, indent=2))


if __name__ == "__main__":
    main()
