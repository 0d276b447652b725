"""Loading a model: sie's ``Reranker`` against transformers' ``from_pretrained`` on the same checkpoint, each load in
a fresh process, in each dtype: wall time, anonymous memory at the peak and once loaded, and the peak of the whole
resident set (which also counts the checkpoint's pages where a loader memory-maps it).

The checkpoint is a random one of a real shape (``--shape``, default Qwen3-Reranker-0.6B's layers with a small
vocabulary) saved in bf16 as decoder checkpoints ship, or any model folder (``--model``). transformers has no int8
mode: sie's int8 line is compared with transformers in fp32, the dtype it would otherwise run on such a CPU.

    python benchmarks/bench_load.py [--shape qwen3-0.6b] [--arch qwen3] [--dtypes float32 bfloat16 int8]
        [--repeats 3] [--model PATH --recipe NAME] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from datetime import date
from pathlib import Path

import torch

from sie.testing import make_random_checkpoint
from sie.testing.checkpoints import SHAPES
from sie.testing.loading import LoadMeasurement, measure_load
from arguments import count
from timing import cpu_model

DECODER_RECIPES = {"qwen3": "qwen3-reranker", "qwen2": "mxbai-rerank-v2"}


def checkpoint_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def summary(loads: list[LoadMeasurement]) -> dict[str, float]:
    """Medians over ``loads``: wall time, and MB above the level before each load: anonymous memory at the peak,
    once loaded, and the peak beyond the loaded level; the whole resident set at the peak and once loaded."""
    def median_mb(values) -> float:
        return statistics.median(values) / 1e6

    return {"seconds": statistics.median(load.seconds for load in loads),
            "peak_mb": median_mb(load.peak - load.before for load in loads),
            "kept_mb": median_mb(load.kept for load in loads),
            "transient_mb": median_mb(load.transient for load in loads),
            "rss_peak_mb": median_mb(load.rss_peak - load.rss_before for load in loads),
            "rss_kept_mb": median_mb(load.rss_after - load.rss_before for load in loads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="qwen3", help="of the random checkpoint (sie.testing.checkpoints)")
    parser.add_argument("--shape", default="qwen3-0.6b", choices=sorted(SHAPES))
    parser.add_argument("--model", type=Path, help="a model folder instead of a random checkpoint")
    parser.add_argument("--recipe", help="the prompt recipe of a decoder --model")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "int8"],
                        choices=["float32", "bfloat16", "int8"])
    parser.add_argument("--repeats", type=count, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        if args.model:
            folder, recipe, described = args.model, args.recipe, str(args.model)
        else:
            folder = make_random_checkpoint(Path(scratch) / "model", args.arch, shape=args.shape, dtype=torch.bfloat16,
                                            tie_word_embeddings=False)
            recipe, described = DECODER_RECIPES.get(args.arch), f"random {args.arch} {args.shape} (bf16)"
        size_mb = checkpoint_bytes(folder) / 1e6
        results: dict[str, dict[str, dict[str, float]]] = {}
        # Round-robin repeats: whatever else the machine does at a moment weighs on every line alike.
        loads: dict[tuple[str, str], list[LoadMeasurement]] = {}
        for _ in range(args.repeats):
            for dtype in args.dtypes:
                for loader in ("sie", "transformers"):
                    baseline_dtype = "float32" if dtype == "int8" and loader == "transformers" else dtype
                    loads.setdefault((dtype, loader), []).append(
                        measure_load(folder, baseline_dtype, recipe if loader == "sie" else None, loader))
        for (dtype, loader), measured in loads.items():
            results.setdefault(dtype, {})[loader] = summary(measured)

    print(f"# {described}, checkpoint {size_mb:.0f} MB; {cpu_model()}, torch {torch.__version__}; "
          f"each load in a fresh process, medians of {args.repeats}; MB above the process before the load: "
          "anonymous memory (peak, kept once loaded, peak beyond it) and the whole resident set with mapped files "
          "(peak, kept)")
    print(f"{'dtype':<9} {'loader':<20} {'seconds':>8} {'anon peak':>10} {'kept':>6} {'transient':>10} "
          f"{'RSS peak':>9} {'RSS kept':>9} {'anon peak / ckpt':>17} {'x transformers time':>20} "
          f"{'x transformers RSS':>19}")
    for dtype, lines in results.items():
        baseline = lines["transformers"]
        for loader, line in lines.items():
            name = "transformers (fp32)" if loader == "transformers" and dtype == "int8" else loader
            print(f"{dtype:<9} {name:<20} {line['seconds']:>8.2f} {line['peak_mb']:>10.0f} {line['kept_mb']:>6.0f} "
                  f"{line['transient_mb']:>10.0f} {line['rss_peak_mb']:>9.0f} {line['rss_kept_mb']:>9.0f} "
                  f"{line['peak_mb'] / size_mb:>17.2f} {line['seconds'] / baseline['seconds']:>20.2f} "
                  f"{line['rss_peak_mb'] / baseline['rss_peak_mb']:>19.2f}")

    if args.json:
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(), "machine": cpu_model(), "platform": platform.platform(),
            "torch": torch.__version__, "checkpoint": described, "checkpoint_mb": size_mb,
            "repeats": args.repeats, "results": results,
        }, indent=2))


if __name__ == "__main__":
    main()
