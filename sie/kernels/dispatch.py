"""Backend choice for the ops, resolved once per model, and the public ops that validate and route each call.

Backends: ``flash`` (attention only; flash.py), ``triton`` (ours), ``cpu`` (attention only: our C++ kernel for
x86 CPUs with AVX512-BF16, in bf16; cpu_attention.py), ``torch`` (reference.py). A model calls
:func:`resolve_kernels` once when it is built and then calls the implementations it holds directly: no name
lookup or ``"auto"`` resolution per call. The public ops (``varlen_attention``, ``layer_norm``, ``bias_gelu``)
check their inputs and take a ``backend=`` name, for callers outside the engine. Probing never raises and
nothing here touches CUDA or imports Triton at import time: Triton modules load on first use.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from sie.errors import BackendError

from .cpu_attention import cpu_attention_runs_on
from .environment import requested_backend, triton_interpreted
from .flash import flash_implementation
from .selection import attention_seconds, fastest_first

logger = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("flash", "triton", "cpu", "torch")
NORM_BACKENDS = ("triton", "torch")  # the ops other than attention have no flash or cpu variant
BACKENDS = ("auto", *ATTENTION_BACKENDS)  # what a model or SIE_BACKEND may ask for

# What each backend needs, for the error that refuses it.
_NEEDS = {
    "flash": "the flash-attn package, a CUDA GPU of compute capability 8.0 or newer, float16 or bfloat16 and a head "
             "dim that is a multiple of 8 up to 256",
    "triton": "the triton package and a CUDA GPU, or on a CPU Triton's interpreter: TRITON_INTERPRET=1 set before "
              "sie is imported, a slow test path",
    "cpu": "bfloat16 (or the int8 mode), a head dim of 32, 64 or 128, and an x86 CPU with AVX512-BF16 where sie's C++ "
           "kernels build (`sie kernels build` says why they do not)",
}
# (op, backend) -> (module in this package, function); imported on first use so Triton stays optional.
# linear_gelu is the engine's form of the gelu op: the FFN's first matmul followed by bias + GELU.
_IMPLEMENTATIONS = {
    ("attention", "torch"): ("reference", "varlen_attention_torch"),
    ("attention", "triton"): ("triton_attention", "varlen_attention_triton"),
    ("attention", "flash"): ("flash", "varlen_attention_flash"),
    ("attention", "cpu"): ("cpu_attention", "varlen_attention_cpu"),
    ("layer_norm", "torch"): ("reference", "layer_norm_torch"),
    ("layer_norm", "triton"): ("triton_layer_norm", "layer_norm_triton"),
    ("gelu", "torch"): ("reference", "bias_gelu_torch"),
    ("gelu", "triton"): ("triton_gelu", "bias_gelu_triton"),
    ("linear_gelu", "torch"): ("reference", "linear_gelu_torch"),
    ("linear_gelu", "triton"): ("triton_gelu", "linear_gelu_triton"),
    ("rms_norm", "torch"): ("reference", "rms_norm_torch"),
    ("rms_norm", "triton"): ("triton_rms_norm", "rms_norm_triton"),
    ("gated_activation", "torch"): ("reference", "gated_activation_torch"),
    ("gated_activation", "triton"): ("triton_gated_activation", "gated_activation_triton"),
}
GATED_ACTIVATIONS = ("silu", "gelu")
# The KernelBackends field that decides each op: the decoder and GLU ops run with the normalisation backend.
_BACKEND_FIELD = {"attention": "attention", "layer_norm": "layer_norm", "gelu": "gelu", "linear_gelu": "gelu",
                  "rms_norm": "layer_norm", "gated_activation": "layer_norm"}


@dataclass(frozen=True)
class KernelBackends:
    """The backend each op runs with on one device and dtype: "flash", "triton", "cpu" or "torch"."""

    attention: str
    layer_norm: str
    gelu: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class Kernels:
    """The implementations a model calls, resolved once from ``backends``. Inputs are not checked: the model
    owns their shapes (the public ops check them). The norm backend serves every op but attention.

    attention(q, k, v, cu_seqlens, max_seqlen, cu_seqlens_q, max_seqlen_q, *, causal, softmax_scale[, window]):
        shapes as :func:`varlen_attention`, every argument given.
    layer_norm(x, weight, bias, eps, residual): as :func:`layer_norm`.
    linear_gelu(x, weight, bias): exact GELU(x @ weight.T + bias); x [rows, in], weight [out, in] -> [rows, out].
    rms_norm(x, weight, eps, residual): as :func:`rms_norm`, returns (normed, summed).
    gated_activation(x, activation): as :func:`gated_activation`.
    """

    backends: KernelBackends
    attention: Callable[..., torch.Tensor]
    layer_norm: Callable[..., torch.Tensor]
    linear_gelu: Callable[..., torch.Tensor]
    rms_norm: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    gated_activation: Callable[..., torch.Tensor]


def triton_runs_on(device: torch.device) -> bool:
    """Whether our Triton kernels can run on ``device``: CUDA, or CPU through Triton's interpreter."""
    if importlib.util.find_spec("triton") is None:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and triton_interpreted()


def flash_runs_on(device: torch.device, dtype: torch.dtype, head_dim: int | None = None) -> bool:
    """Whether a flash varlen kernel serves ``device``, ``dtype`` and ``head_dim`` (CUDA, fp16/bf16, Ampere or
    newer; head dims that are multiples of 8 up to 256, e.g. not TinyBERT's 26)."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16) or flash_implementation() is None:
        return False
    if head_dim is not None and (head_dim % 8 or head_dim > 256):
        return False
    try:
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    except (RuntimeError, AssertionError, ValueError):
        return False


def available_backends(
    device: torch.device, dtype: torch.dtype, head_dim: int | None = None
) -> dict[str, tuple[str, ...]]:
    """Backends that can run each op on ``device``/``dtype`` (and attention ``head_dim``), fastest first."""
    device = torch.device(device)
    if not triton_runs_on(device):
        norm = ("torch",)
    elif device.type == "cuda":
        norm = ("triton", "torch")
    else:
        norm = ("torch", "triton")  # interpreted: correct but slow, so never the automatic choice
    attention = (tuple(b for b in ("flash",) if flash_runs_on(device, dtype, head_dim))
                 + tuple(b for b in ("cpu",) if cpu_attention_runs_on(device, dtype, head_dim)) + norm)
    return {"attention": attention, "layer_norm": norm, "gelu": norm}


def resolve_backends(
    device: torch.device, dtype: torch.dtype, backend: str = "auto", head_dim: int | None = None
) -> KernelBackends:
    """Pick the backends for a model on ``device`` with activations in ``dtype`` and attention heads of ``head_dim``.

    ``backend="auto"`` takes ``$SIE_BACKEND`` when set, else the fastest available backend for every op (logged
    once): where more than one attention backend runs at full speed (a GPU; a CPU with the ``cpu`` kernel), they are
    timed once per device, dtype and head size (``selection.py``). "triton" or "torch" requested explicitly applies
    to all three ops (a whole-engine switch, e.g. to compare against the torch path); "flash" and "cpu" cover
    attention, the other ops resolve as with "auto".
    A request that is unknown or cannot run raises BackendError naming the backends that can.
    """
    request = str(backend).strip().lower() or "auto"  # spelled as SIE_BACKEND may be
    if request == "auto":
        request = requested_backend() or "auto"
    return _resolve(torch.device(device), dtype, request, head_dim)


def resolve_kernels(
    device: torch.device, dtype: torch.dtype, backend: str = "auto", head_dim: int | None = None
) -> Kernels:
    """:func:`resolve_backends`, then the implementations of the chosen backends, ready to call."""
    backends = resolve_backends(device, dtype, backend, head_dim)
    return Kernels(
        backends=backends,
        attention=_load("attention", backends.attention),
        layer_norm=_load("layer_norm", backends.layer_norm),
        **{op: _load(op, getattr(backends, _BACKEND_FIELD[op]))
           for op in ("linear_gelu", "rms_norm", "gated_activation")},
    )


@functools.cache
def _resolve(device: torch.device, dtype: torch.dtype, request: str, head_dim: int | None) -> KernelBackends:
    if request not in BACKENDS:
        raise BackendError(f"unknown backend {request!r}; expected one of {', '.join(BACKENDS)}")
    available = available_backends(device, dtype, head_dim)
    if request == "auto":
        attention = available["attention"]
        if device.type == "cpu":  # the interpreted Triton kernel is a test path, never timed or chosen
            attention = tuple(backend for backend in attention if backend != "triton")
        if len(attention) > 1:
            attention = fastest_first(attention, lambda backend: attention_seconds(
                _load("attention", backend), device, dtype, head_dim or 64))
        backends = KernelBackends(attention[0], available["layer_norm"][0], available["gelu"][0])
        logger.info("sie kernels on %s/%s: %s", device, str(dtype).removeprefix("torch."), backends.as_dict())
        return backends
    for op in ("attention", "layer_norm", "gelu"):
        if request in _op_choices(op) and request not in available[op]:
            raise _unavailable(op, request, device, dtype, available[op], head_dim)
    norm = request if request in NORM_BACKENDS else available["layer_norm"][0]
    return KernelBackends(request, norm, norm)


def _op_choices(op: str) -> tuple[str, ...]:
    return ATTENTION_BACKENDS if op == "attention" else NORM_BACKENDS


@functools.cache
def _checked(op: str, backend: str, device: torch.device, dtype: torch.dtype, head_dim: int | None) -> str:
    """Validate a per-call backend name once per (op, backend, device, dtype, attention head_dim)."""
    if backend not in _op_choices(op):
        raise BackendError(f"unknown {op} backend {backend!r}; expected auto or one of {', '.join(_op_choices(op))}")
    available = available_backends(device, dtype, head_dim)[_BACKEND_FIELD[op]]
    if backend not in available:
        raise _unavailable(op, backend, device, dtype, available, head_dim)
    return backend


def _unavailable(
    op: str, backend: str, device: torch.device, dtype: torch.dtype, available: tuple[str, ...],
    head_dim: int | None = None,
) -> BackendError:
    """The error for ``backend`` asked for where it cannot run ``op``: what runs instead, and what it needs."""
    shape = "" if head_dim is None else f" and head_dim {head_dim}"
    return BackendError(f"{op} backend {backend!r} is not available on {device} with {dtype}{shape}; available: "
                        f"{', '.join(available)}. {backend} needs {_NEEDS[backend]}")


def _implementation(op: str, backend: str, device: torch.device, dtype: torch.dtype, head_dim: int | None = None):
    """The implementation of ``op`` for a call; attention passes its head_dim, which decides flash and cpu."""
    if backend == "auto":
        backend = getattr(resolve_backends(device, dtype, head_dim=head_dim), _BACKEND_FIELD[op])
    else:
        backend = _checked(op, backend, device, dtype, head_dim)
    return _load(op, backend)


@functools.cache
def _load(op: str, backend: str):
    module_name, function = _IMPLEMENTATIONS[(op, backend)]
    return getattr(importlib.import_module(f".{module_name}", __package__), function)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    *,
    cu_seqlens_q: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    causal: bool = False,
    softmax_scale: float | None = None,
    window: tuple[int, int] = (-1, -1),
    backend: str = "auto",
) -> torch.Tensor:
    """Multi-head attention over packed variable-length sequences, never padded.

    q: [total_q, nheads, headdim]; k, v: [total_tokens, nheads_kv, headdim], nheads a multiple of nheads_kv
    (grouped-query attention: query head h reads key/value head h // (nheads // nheads_kv)); cu_seqlens: int32
    [batch + 1], the key (and by default query) sequence bounds; max_seqlen: the longest key sequence.
    cu_seqlens_q/max_seqlen_q give the query bounds when queries are a subset of rows: ``cu_seqlens_q =
    arange(batch + 1)`` with q the CLS (or last) rows, one query per sequence, attends each over its whole
    sequence. max_seqlen_q defaults to max_seqlen when cu_seqlens_q is None, else it is read from cu_seqlens_q
    (one device sync). Causal masks align to the bottom right, as in flash-attn. window = (left, right): a
    query at key position p sees keys p - left .. p + right (sliding-window attention); -1 leaves a side
    unbounded. softmax_scale defaults to headdim ** -0.5. Returns [total_q, nheads, headdim] in q's dtype.
    """
    if (q.ndim != 3 or k.ndim != 3 or k.shape != v.shape or q.shape[2] != k.shape[2]
            or k.shape[1] == 0 or q.shape[1] % k.shape[1]):
        raise ValueError(
            f"expected q [total_q, nheads, headdim] and k, v [total_tokens, nheads_kv, headdim] with nheads a "
            f"multiple of nheads_kv; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if len(window) != 2 or any(not isinstance(side, int) or side < -1 for side in window):
        raise ValueError(f"window must be (left, right) with -1 for no bound, got {window!r}")
    if cu_seqlens.dtype != torch.int32 or cu_seqlens.ndim != 1:
        raise ValueError(f"cu_seqlens must be int32 [batch + 1], got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}")
    if cu_seqlens_q is None:
        cu_seqlens_q, max_seqlen_q = cu_seqlens, max_seqlen
    elif cu_seqlens_q.shape != cu_seqlens.shape or cu_seqlens_q.dtype != torch.int32:
        raise ValueError("cu_seqlens_q must be int32 with the same shape as cu_seqlens")
    elif max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    run = _implementation("attention", backend, q.device, q.dtype, q.shape[-1])
    return run(q, k, v, cu_seqlens, max_seqlen, cu_seqlens_q, max_seqlen_q, causal=causal, softmax_scale=scale,
               window=tuple(window))


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """LayerNorm(x + residual) with fp32 statistics.

    x, residual: [total_tokens, hidden]; weight, bias: [hidden]. Returns [total_tokens, hidden] in x's dtype.
    """
    if x.ndim != 2 or weight.shape != (x.shape[1],) or bias.shape != weight.shape:
        raise ValueError(
            f"expected x [total_tokens, hidden] and weight, bias [hidden]; "
            f"got {tuple(x.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}"
        )
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual {tuple(residual.shape)} does not match x {tuple(x.shape)}")
    return _implementation("layer_norm", backend, x.device, x.dtype)(x, weight, bias, eps, residual)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Exact (erf) GELU(x + bias). x: [total_tokens, n]; bias: [n]. Returns [total_tokens, n] in x's dtype."""
    if x.ndim != 2 or bias.shape != (x.shape[1],):
        raise ValueError(f"expected x [total_tokens, n] and bias [n]; got {tuple(x.shape)}, {tuple(bias.shape)}")
    return _implementation("gelu", backend, x.device, x.dtype)(x, bias)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm(x + residual) with fp32 statistics, and the sum (a pre-norm decoder's residual stream).

    x, residual: [rows, hidden]; weight: [hidden]. Returns (normed, summed), both [rows, hidden] in x's dtype;
    summed is x itself when residual is None.
    """
    if x.ndim != 2 or weight.shape != (x.shape[1],):
        raise ValueError(f"expected x [rows, hidden] and weight [hidden]; got {tuple(x.shape)}, {tuple(weight.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual {tuple(residual.shape)} does not match x {tuple(x.shape)}")
    return _implementation("rms_norm", backend, x.device, x.dtype)(x, weight, eps, residual)


def gated_activation(x: torch.Tensor, activation: str, *, backend: str = "auto") -> torch.Tensor:
    """act(gate) * up for x = [gate | up]: SwiGLU (``"silu"``) or GeGLU (``"gelu"``, exact erf).

    x: [rows, 2n], the fused gate/up projection with the gate first. Returns [rows, n] in x's dtype.
    """
    if activation not in GATED_ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(GATED_ACTIVATIONS)}")
    if x.ndim != 2 or x.shape[1] % 2:
        raise ValueError(f"expected x [rows, 2n], got {tuple(x.shape)}")
    return _implementation("gated_activation", backend, x.device, x.dtype)(x, activation)
