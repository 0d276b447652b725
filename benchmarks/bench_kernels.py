"""Kernel benchmarks: sie's Triton kernels against the unfused or padded torch ops, in one run on one device.

Attention (FLOPs = 4 * nheads * headdim * sum of L_i^2, the useful work; padding is not counted):
  triton varlen (the line) vs padded SDPA with a key mask (the baseline, what padded stacks run), the flash
  varlen backend when present, sie's C++ CPU kernel (bf16 on a CPU with AVX512-BF16) and the torch backend (one
  SDPA per sequence, sie's CPU path otherwise). Head layouts
  include grouped key/value heads (a decoder's GQA: nheads query heads on nheads_kv key/value heads).
LayerNorm (bytes = read x and residual, write out) and bias + GELU (bytes = read x, write out):
  triton fused vs the unfused torch ops (baseline); LayerNorm also against a plain copy of x, the achievable
  bandwidth measured in the same run.
RMSNorm (bytes = read x and residual, write normed and summed) and the gated activation act(gate) * up (bytes =
  read [gate | up], write out): triton fused vs sie's torch backend, the unfused ops (baseline).

    python benchmarks/bench_kernels.py [--device cuda] [--dtype fp16] [--tiny] [--out DIR]

Prints a table, writes kernels.json, kernels.md and kernels.png (when matplotlib is installed) under --out
(default: $OUT, else benchmarks/out). --tiny runs small shapes for a CPU smoke test (CI, with TRITON_INTERPRET=1).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sie.kernels import available_backends, bias_gelu, gated_activation, layer_norm, rms_norm, varlen_attention
from sie.kernels.flash import flash_implementation
from arguments import count
from timing import device_name, median_seconds

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The mix the padded-SDPA target is stated on (about 40% of a padded batch is padding).
PADDED_TARGET_MIX = "128 x 102-512"
DEFAULT_OUT = Path(os.environ.get("OUT") or Path(__file__).resolve().parent / "out")


@dataclass
class Row:
    """One timed implementation of one op on one case; ``ratio`` is baseline time / this time."""

    op: str
    case: str
    impl: str
    ms: float
    rate: float
    unit: str
    ratio: float = 1.0
    baseline: str = ""


@dataclass(frozen=True)
class Sizes:
    """The shapes one run covers: attention mixes and head layouts, LayerNorm and RMSNorm widths, FFN widths."""

    mixes: dict[str, list[int]]
    heads: list[tuple[int, int, int]]  # (nheads, nheads_kv, headdim)
    tokens: int  # rows of the normalisation and activation inputs
    hidden: list[int]
    ffn: list[int]
    decoder_hidden: list[int]  # RMSNorm widths
    gated: list[tuple[int, str]]  # (n, activation) of a gated activation over [tokens, 2n]


def sizes(tiny: bool, seed: int = 0) -> Sizes:
    """Realistic length mixes: reranking batches of 128 pairs, one uniform over 16-512 tokens (about half of a
    padded batch is padding) and one over 102-512 (about 40% padding, the target's mix)."""
    if tiny:
        return Sizes({"tiny 4x1-40": [1, 17, 40, 9]}, [(2, 2, 32), (4, 2, 32)], tokens=64, hidden=[64], ffn=[256],
                     decoder_hidden=[96], gated=[(128, "silu"), (128, "gelu")])
    generator = torch.Generator().manual_seed(seed)
    mixes = {
        "128 x 16-512": torch.randint(16, 513, (128,), generator=generator).tolist(),
        PADDED_TARGET_MIX: torch.randint(102, 513, (128,), generator=generator).tolist(),
    }
    # (32, 8, 128): Qwen3-4B/8B's attention; RMSNorm at Qwen3-0.6B's, -4B's and -8B's hidden sizes; GeGLU at
    # ModernBERT-base's width, SwiGLU at Qwen3-0.6B's and -4B's.
    return Sizes(mixes, [(12, 12, 32), (12, 12, 64), (32, 8, 128)], tokens=32768, hidden=[384, 768, 1024],
                 ffn=[1536, 3072, 4096], decoder_hidden=[1024, 2560, 4096],
                 gated=[(1152, "gelu"), (3072, "silu"), (9728, "silu")])


def padding_fraction(lengths: list[int]) -> float:
    return 1 - sum(lengths) / (len(lengths) * max(lengths))


def median_ms(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``run``: triton.testing.do_bench on CUDA, repeated wall-clock timing on CPU."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median")
    return median_seconds(run, device, repeats) * 1e3


def padded_inputs(q, k, v, lengths):
    """[batch, nheads, max_len, headdim] copies of packed q, k, v and the bool key mask [batch, 1, 1, max_len].

    Grouped key/value heads are repeated to nheads here, outside the timing, as padded GQA stacks repeat them
    before SDPA when they pass a mask."""
    groups = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
    batch, max_len = len(lengths), max(lengths)
    lengths_t = torch.tensor(lengths, device=q.device)
    valid = torch.arange(max_len, device=q.device)[None, :] < lengths_t[:, None]

    def pad(t):
        out = t.new_zeros(batch, max_len, *t.shape[1:])
        out[valid] = t
        return out.transpose(1, 2).contiguous()

    return pad(q), pad(k), pad(v), valid[:, None, None, :]


def bench_attention(sizes_: Sizes, dtype, device, repeats: int) -> list[Row]:
    rows = []
    backends = available_backends(device, dtype)["attention"]
    generator = torch.Generator().manual_seed(1)
    for mix, lengths in sizes_.mixes.items():
        cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
        max_len = max(lengths)
        for nheads, nheads_kv, headdim in sizes_.heads:
            qkv = torch.randn(sum(lengths), nheads + 2 * nheads_kv, headdim, generator=generator)
            q, k, v = qkv.to(device=device, dtype=dtype).split([nheads, nheads_kv, nheads_kv], dim=1)
            pq, pk, pv, mask = padded_inputs(q, k, v, lengths)
            layout = f"{nheads}x{headdim}" + (f" ({nheads_kv} kv)" if nheads_kv != nheads else "")
            case = f"{mix} ({padding_fraction(lengths):.0%} pad), {layout}"
            flops = 4 * nheads * headdim * sum(n * n for n in lengths)
            impls = {"sdpa padded": lambda: F.scaled_dot_product_attention(pq, pk, pv, attn_mask=mask)}
            for backend in ("triton", "flash", "cpu", "torch"):
                if backend in backends:
                    label = f"flash ({flash_implementation()})" if backend == "flash" else backend

                    def run(backend=backend):
                        return varlen_attention(q, k, v, cu_seqlens, max_len, backend=backend)

                    impls[label] = run
            rows += timed_rows("attention", case, impls, "sdpa padded", device, repeats,
                               lambda ms: flops / ms / 1e9, "TFLOP/s")
    return rows


def bench_layer_norm(sizes_: Sizes, dtype, device, repeats: int) -> list[Row]:
    rows = []
    triton_ok = "triton" in available_backends(device, dtype)["layer_norm"]
    for hidden in sizes_.hidden:
        x, residual = (torch.randn(sizes_.tokens, hidden, device=device, dtype=dtype) for _ in range(2))
        weight, bias = torch.randn(hidden, device=device, dtype=dtype), torch.randn(hidden, device=device, dtype=dtype)
        copy_target = torch.empty_like(x)
        element_bytes = x.numel() * x.element_size()
        impls = {"torch unfused": lambda: F.layer_norm(x + residual, (hidden,), weight, bias, 1e-12)}
        if triton_ok:
            impls["triton"] = lambda: layer_norm(x, weight, bias, 1e-12, residual, backend="triton")
        case = f"{sizes_.tokens} x {hidden}"
        rows += timed_rows("layer_norm", case, impls, "torch unfused", device, repeats,
                           lambda ms: 3 * element_bytes / ms / 1e6, "GB/s")
        rows += timed_rows("copy", case, {"copy x": lambda: copy_target.copy_(x)}, "copy x", device, repeats,
                           lambda ms: 2 * element_bytes / ms / 1e6, "GB/s")
    return rows


def bench_gelu(sizes_: Sizes, dtype, device, repeats: int) -> list[Row]:
    rows = []
    triton_ok = "triton" in available_backends(device, dtype)["gelu"]
    for width in sizes_.ffn:
        x = torch.randn(sizes_.tokens, width, device=device, dtype=dtype)
        bias = torch.randn(width, device=device, dtype=dtype)
        impls = {"torch unfused": lambda: F.gelu(x + bias)}
        if triton_ok:
            impls["triton"] = lambda: bias_gelu(x, bias, backend="triton")
        rows += timed_rows("bias_gelu", f"{sizes_.tokens} x {width}", impls, "torch unfused", device, repeats,
                           lambda ms: 2 * x.numel() * x.element_size() / ms / 1e6, "GB/s")
    return rows


def bench_rms_norm(sizes_: Sizes, dtype, device, repeats: int) -> list[Row]:
    rows = []
    triton_ok = "triton" in available_backends(device, dtype)["layer_norm"]
    for hidden in sizes_.decoder_hidden:
        x, residual = (torch.randn(sizes_.tokens, hidden, device=device, dtype=dtype) for _ in range(2))
        weight = 1 + 0.1 * torch.randn(hidden, device=device, dtype=dtype)
        impls = {"torch unfused": lambda: rms_norm(x, weight, 1e-6, residual, backend="torch")}
        if triton_ok:
            impls["triton"] = lambda: rms_norm(x, weight, 1e-6, residual, backend="triton")
        rows += timed_rows("rms_norm", f"{sizes_.tokens} x {hidden}", impls, "torch unfused", device, repeats,
                           lambda ms: 4 * x.numel() * x.element_size() / ms / 1e6, "GB/s")
    return rows


def bench_gated_activation(sizes_: Sizes, dtype, device, repeats: int) -> list[Row]:
    rows = []
    triton_ok = "triton" in available_backends(device, dtype)["layer_norm"]
    for width, activation in sizes_.gated:
        x = torch.randn(sizes_.tokens, 2 * width, device=device, dtype=dtype)
        impls = {"torch unfused": lambda: gated_activation(x, activation, backend="torch")}
        if triton_ok:
            impls["triton"] = lambda: gated_activation(x, activation, backend="triton")
        rows += timed_rows("gated_act", f"{sizes_.tokens} x 2*{width} {activation}", impls, "torch unfused", device,
                           repeats, lambda ms: 1.5 * x.numel() * x.element_size() / ms / 1e6, "GB/s")
    return rows


def timed_rows(op, case, impls: dict[str, Callable], baseline: str, device, repeats, rate, unit) -> list[Row]:
    times = {name: median_ms(run, device, repeats) for name, run in impls.items()}
    return [
        Row(op, case, name, ms, rate(ms), unit, ratio=times[baseline] / ms, baseline=baseline)
        for name, ms in times.items()
    ]


def format_table(rows: list[Row]) -> str:
    lines = [f"{'op':<10} {'case':<40} {'impl':<20} {'ms':>9} {'rate':>16} {'x baseline':>11}"]
    for r in rows:
        lines.append(f"{r.op:<10} {r.case:<40} {r.impl:<20} {r.ms:>9.3f} {r.rate:>9.4g} {r.unit:<6} "
                     f"{r.ratio:>10.2f}x")
    return "\n".join(lines)


def format_markdown(rows: list[Row], title: str) -> str:
    """The table as markdown, for RESULTS.md."""
    lines = [f"**{title}**", "", "| op | case | impl | ms | rate | x baseline |", "|---|---|---|---:|---:|---:|"]
    lines += [f"| {r.op} | {r.case} | {r.impl} | {r.ms:.3f} | {r.rate:.4g} {r.unit} | {r.ratio:.2f}x ({r.baseline}) |"
              for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], title: str, path: Path) -> bool:
    """Grouped bars of each op's rate per case and implementation; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ops = [op for op in dict.fromkeys(r.op for r in rows) if op != "copy"]
    figure, axes = plt.subplots(len(ops), 1, figsize=(11, 3.2 * len(ops)), squeeze=False)
    for axis, op in zip(axes[:, 0], ops):
        # The copy bandwidth shares the LayerNorm axis as the ceiling that LayerNorm is measured against.
        op_rows = [r for r in rows if r.op == op or (op == "layer_norm" and r.op == "copy")]
        cases, impls = list(dict.fromkeys(r.case for r in op_rows)), list(dict.fromkeys(r.impl for r in op_rows))
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            rates = {r.case: r.rate for r in op_rows if r.impl == impl}
            positions = [c + i * width for c, case in enumerate(cases) if case in rates]
            axis.bar(positions, [rates[case] for case in cases if case in rates], width, label=impl)
        axis.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))], cases, fontsize=7)
        axis.set_ylabel(op_rows[0].unit)
        axis.set_title(op, fontsize=9)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), help="default: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--tiny", action="store_true", help="small shapes: a smoke test for CPU and CI")
    parser.add_argument("--repeats", type=count, default=5, help="timed runs per line on CPU")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    sizes_ = sizes(args.tiny)
    with torch.inference_mode():
        rows = bench_attention(sizes_, dtype, device, args.repeats)
        rows += bench_layer_norm(sizes_, dtype, device, args.repeats)
        rows += bench_gelu(sizes_, dtype, device, args.repeats)
        rows += bench_rms_norm(sizes_, dtype, device, args.repeats)
        rows += bench_gated_activation(sizes_, dtype, device, args.repeats)
    title = (f"sie kernels on {device_name(device)}, {str(dtype).removeprefix('torch.')}, torch {torch.__version__}"
             f"{', tiny shapes' if args.tiny else ''}")
    print(title)
    print(format_table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"title": title, "device": device_name(device), "dtype": str(dtype), "tiny": args.tiny,
               "rows": [asdict(r) for r in rows]}
    (args.out / "kernels.json").write_text(json.dumps(results, indent=1))
    (args.out / "kernels.md").write_text(format_markdown(rows, title))
    if plot(rows, title, args.out / "kernels.png"):
        print(f"wrote {args.out / 'kernels.json'} and {args.out / 'kernels.png'}")
    else:
        print(f"wrote {args.out / 'kernels.json'} (no plot: matplotlib is not installed)")
    return results


if __name__ == "__main__":
    main()
