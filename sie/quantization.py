"""The int8 mode: linear layers on int8 weights and int8 activations, everything else in fp32.

Weights are int8 with one scale per output channel (symmetric); each linear's input is quantized on the fly with
one scale per row, i.e. per token (symmetric, dynamic). The product of two int8 matrices accumulates exactly in
int32 (:func:`integer_matmul`), and one fp32 multiply by both scales gives the output:

    y[t, o] = (sum_i qx[t, i] * qw[o, i]) * sx[t] * sw[o] + bias[o]

LayerNorm, softmax and GELU stay in fp32; attention runs in bf16 where sie's C++ CPU kernel is the bf16 engine's
choice (a CPU with AVX512-BF16: 2-3x PyTorch's fp32 SDPA, the int8 mode's largest cost before), else in fp32. A
checkpoint folder may carry its original integers in ``INT8_WEIGHTS`` (the default model's converter writes the ONNX
file's own integers and scales there); without it the float weights are quantized per channel.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from sie.errors import BackendError
from sie.kernels import Kernels, resolve_backends, resolve_kernels
from sie.kernels.cpu_attention import varlen_attention_cpu
from sie.kernels.cpu_extension import cpu_extension

logger = logging.getLogger(__name__)

# Beside model.safetensors: ``<linear key>.weight`` int8 [out, in] and ``<linear key>.weight_scale`` fp32 [out], in
# the checkpoint's own (transformers) keys.
INT8_WEIGHTS = "sie_int8.safetensors"
QMAX = 127  # symmetric: -128 is never produced, so negation is exact
# The int8 matmul's rows are padded to a multiple of this. oneDNN builds (and caches) a kernel per shape, ~2 ms for
# each new row count: a server, whose every batch has another token count, paid that on most matmuls.
ROW_BUCKET = 64
# Output channels quantized per pass when a float weight is quantized: quantize_rows makes two fp32 copies of what it
# is given, 0.8 GB for Qwen3-8B's fused gate/up projection whole, 32 MB in passes of this many rows.
WEIGHT_ROWS_PER_PASS = 1024
# The longest sum of int8 x int8 products whose every partial sum is an integer below 2**24 (1040 * 127 * 127 <
# 2**24): an fp32 matmul of that depth is exact, whatever order it adds in, with or without fused multiply-adds.
EXACT_FP32_DEPTH = 2**24 // (QMAX * QMAX)


@functools.cache
def cpu_has_int8_dot_products() -> bool:
    """Whether this CPU has int8 dot-product instructions (VNNI or AMX) for oneDNN's s8s8 matmul. Without them
    ``torch._int_mm`` runs a reference loop: 2.5 GOP/s on a 2-core AVX2 EPYC, 1/30 of its fp32 matmul."""
    return torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported()


def integer_matmul(q: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The exact product ``q @ weight.T`` of int8 ``q`` ``[rows, in]`` and int8 ``weight`` ``[out, in]``: int32
    ``[rows, out]``.

    ``torch._int_mm`` where the device has int8 dot products (GPUs; CPUs with VNNI or AMX), its rows padded to
    ``ROW_BUCKET``. Elsewhere fp32 matmuls of the integers' float values, over slices of ``in`` no longer than
    ``EXACT_FP32_DEPTH``, each exact, summed in int32: the same integers at the fp32 matmul's speed."""
    if q.device.type != "cpu" or cpu_has_int8_dot_products():
        rows = q.shape[0]
        padding = -rows % ROW_BUCKET
        if padding:
            q = torch.cat([q, q.new_zeros(padding, q.shape[1])])
        return torch._int_mm(q, weight.t())[:rows]
    depth = q.shape[1]
    slices = -(-depth // EXACT_FP32_DEPTH)
    width = -(-depth // slices)
    accumulated = None
    for start in range(0, depth, width):
        part = F.linear(q[:, start:start + width].float(), weight[:, start:start + width].float()).to(torch.int32)
        accumulated = part if accumulated is None else accumulated.add_(part)
    return accumulated


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization with one scale per row: ``x ~ q * scale[:, None]``.

    x: ``[rows, n]`` float. Returns q ``[rows, n]`` int8 in [-127, 127] (each row's largest |x| maps to 127,
    values round half to even) and scale ``[rows]`` fp32. A row of zeros, or of magnitudes so small that the scale
    would underflow, gets scale 1 and zeros. A row holding NaN or inf gets a NaN or inf scale, so that whatever
    multiplies by it is not finite either, as in a float model.
    """
    x = x.float()
    # max and -min rather than abs().amax(): no [rows, n] temporary, which cost half the quantization's time.
    amax = torch.maximum(x.amax(dim=1), x.amin(dim=1).neg_())
    scale = amax / QMAX
    scale = torch.where(amax <= QMAX * torch.finfo(torch.float32).tiny, torch.ones_like(scale), scale)
    q = torch.div(x, scale[:, None]).round_().clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


def int8_linear(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False
) -> torch.Tensor:
    """``x @ weight.T + bias`` with x quantized per row, then exact GELU if ``gelu``. x: ``[rows, in]`` float;
    weight: ``[out, in]`` int8; weight_scale: ``[out]`` fp32; bias: ``[out]`` fp32 or None. Returns ``[rows, out]``
    fp32.

    Where sie's C++ CPU kernels run, the quantization and the rescale (with the GELU) are one pass each
    (``csrc/cpu_int8.cpp``), the same result bit for bit (the GELU within 2e-7 of PyTorch's); elsewhere they are
    the eager ops below."""
    extension = cpu_extension() if x.device.type == "cpu" else None
    if extension is not None:
        q, scale = extension.quantize_rows(x, ROW_BUCKET)
        return extension.rescale_rows_(torch._int_mm(q, weight.t()), x.shape[0], scale, weight_scale, bias, gelu)
    q, scale = quantize_rows(x)
    out = integer_matmul(q, weight).float().mul_(scale[:, None]).mul_(weight_scale)
    out = out if bias is None else out.add_(bias)
    return F.gelu(out) if gelu else out


class Int8Linear(nn.Module):
    """``nn.Linear``'s place in the int8 mode, for the engine's 2-D activations: ``forward(x)`` takes ``[rows, in]``
    and returns fp32 ``[rows, out]``; int8 weight with per-channel scales.

    Buffers: ``weight`` ``[out, in]`` int8, ``weight_scale`` ``[out]`` fp32, ``bias`` ``[out]`` fp32 (or None).
    """

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        if weight.dtype != torch.int8 or weight.ndim != 2 or weight_scale.shape != weight.shape[:1]:
            raise ValueError(f"expected an int8 [out, in] weight and [out] scales, got {weight.dtype} "
                             f"{tuple(weight.shape)} and {tuple(weight_scale.shape)}")
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("weight_scale", weight_scale.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.float().contiguous())

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8Linear:
        """Per-channel symmetric quantization of ``linear``'s weight, ``WEIGHT_ROWS_PER_PASS`` output channels at a
        time; the bias stays fp32."""
        parts = [quantize_rows(rows) for rows in linear.weight.detach().split(WEIGHT_ROWS_PER_PASS)]
        weight, scale = (torch.cat(tensors) for tensors in zip(*parts, strict=True))
        return cls(weight, scale, None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor, features: slice = slice(None), gelu: bool = False) -> torch.Tensor:
        """``[rows, in]`` -> ``[rows, out]`` fp32, or only the output ``features`` asked for; GELU applied if
        ``gelu``."""
        bias = None if self.bias is None else self.bias[features]
        return int8_linear(x, self.weight[features], self.weight_scale[features], bias, gelu)


def linear_features(layer: nn.Module, x: torch.Tensor, features: slice) -> torch.Tensor:
    """``layer(x)[:, features]`` without computing the other outputs; ``layer`` is ``nn.Linear`` or Int8Linear.
    x: ``[rows, in]``."""
    if isinstance(layer, Int8Linear):
        return layer(x, features)
    return F.linear(x, layer.weight[features], None if layer.bias is None else layer.bias[features])


def linear_gelu(layer: nn.Module, x: torch.Tensor, kernels: Kernels) -> torch.Tensor:
    """Exact GELU(layer(x)): the kernels' fused matmul + bias + GELU for ``nn.Linear``, the int8 matmul with GELU in
    its rescale for Int8Linear. x: ``[rows, in]`` -> ``[rows, out]``."""
    if isinstance(layer, Int8Linear):
        return layer(x, gelu=True)
    return kernels.linear_gelu(x, layer.weight, layer.bias)


def int8_kernels(device: torch.device, backend: str, head_dim: int) -> Kernels:
    """The int8 mode's kernels: fp32 ones, with attention in bf16 where the bf16 engine would run sie's C++ CPU
    kernel for ``backend`` and ``head_dim`` ("auto" where it is the fastest, or "cpu"; an explicit "torch" keeps
    fp32 SDPA). A backend that cannot run raises BackendError, saying how the int8 mode runs."""
    try:
        if resolve_backends(device, torch.bfloat16, backend, head_dim).attention != "cpu":
            return resolve_kernels(device, torch.float32, backend, head_dim)
    except BackendError as error:
        raise BackendError(f"{error} (the int8 mode runs attention in bfloat16 through sie's cpu kernel where it "
                           "can, else in float32, and its other ops in float32)") from None
    # "cpu" names the attention kernel only: the other ops run as "torch" (what "auto" takes on a CPU).
    kernels = resolve_kernels(device, torch.float32, "torch", head_dim)
    return dataclasses.replace(kernels, backends=dataclasses.replace(kernels.backends, attention="cpu"),
                               attention=attention_in_bf16)


def attention_in_bf16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """fp32 q ``[total_q, nheads, headdim]``, k and v through the bf16 C++ kernel; returns fp32
    ``[total_q, nheads, headdim]``. Arguments as ``Kernels.attention``."""
    return varlen_attention_cpu(q.bfloat16(), k.bfloat16(), v.bfloat16(), *args, **kwargs).float()


def read_int8_weights(folder: Path) -> dict[str, torch.Tensor] | None:
    """The original integers and scales a checkpoint folder carries (``INT8_WEIGHTS``), or None."""
    path = Path(folder) / INT8_WEIGHTS
    return load_file(path) if path.is_file() else None


def quantize_model(model: nn.Module, integers: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Replaces every ``nn.Linear`` of ``model`` with an Int8Linear, in place, and returns the model.

    ``integers`` holds int8 weights and their scales in the module's own keys (``<name>.weight``,
    ``<name>.weight_scale``); a linear layer it has is built from them exactly, any other is quantized per
    channel from its float weight. Integers that fit no linear layer (another name, a shape that differs from the
    float layer's, a weight without its scale) raise ValueError: they were meant for another model.
    """
    integers = integers or {}
    # Names, not modules: each float layer is freed as soon as its int8 replacement is in place.
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    expected = {f"{name}.{part}" for name in linears for part in ("weight", "weight_scale")}
    stray = sorted(set(integers) - expected)
    halves = sorted(key for key in integers if key.endswith(".weight") and f"{key}_scale" not in integers)
    if stray or halves:
        raise ValueError(f"int8 weights that fit no linear layer: {stray[:4]}, without a scale: {halves[:4]}")
    kept = 0
    for name in linears:
        linear = model.get_submodule(name)
        if f"{name}.weight" in integers:
            weight, scale = integers[f"{name}.weight"], integers[f"{name}.weight_scale"]
            if weight.shape != linear.weight.shape:
                raise ValueError(f"{name}: int8 weight {tuple(weight.shape)} differs from the float weight "
                                 f"{tuple(linear.weight.shape)}")
            bias = None if linear.bias is None else linear.bias.detach()
            quantized = Int8Linear(weight.to(linear.weight.device), scale.to(linear.weight.device), bias)
            kept += 1
        else:
            quantized = Int8Linear.from_float(linear)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, quantized)
    logger.info("int8: %d linear layers, %d with the checkpoint's own integers, %d quantized per channel",
                len(linears), kept, len(linears) - kept)
    return model
