"""Backend resolution: automatic choices, the environment override, explicit requests and their errors, and the
implementations a model holds once they are resolved."""

import logging
import os
import subprocess
import sys

import pytest
import torch

import sie.kernels
from sie import BackendError, SieError
from sie.kernels import (
    ENV_BACKEND,
    KernelBackends,
    bias_gelu,
    dispatch,
    layer_norm,
    reference,
    resolve_backends,
    resolve_kernels,
    varlen_attention,
)
from sie.kernels.environment import DEPRECATED_ENV_BACKEND

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_backend_in_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_BACKEND, raising=False)
    monkeypatch.delenv(DEPRECATED_ENV_BACKEND, raising=False)


def test_cpu_auto_runs_torch_everywhere():
    backends = resolve_backends(CPU, torch.float32)
    assert backends == KernelBackends(attention="torch", layer_norm="torch", gelu="torch")
    assert backends.as_dict() == {"attention": "torch", "layer_norm": "torch", "gelu": "torch"}


def test_environment_overrides_auto(monkeypatch, device):
    """On CPU, tests run Triton's interpreter: "triton" is available there, though never chosen automatically."""
    monkeypatch.setenv(ENV_BACKEND, "triton")
    backends = resolve_backends(device, torch.float32)
    assert backends == KernelBackends(attention="triton", layer_norm="triton", gelu="triton")
    # An explicit argument outranks the environment.
    assert resolve_backends(device, torch.float32, "torch") == KernelBackends("torch", "torch", "torch")


def test_the_deprecated_variable_still_works_with_a_warning(monkeypatch, device):
    monkeypatch.setenv(DEPRECATED_ENV_BACKEND, "triton")
    with pytest.warns(FutureWarning, match=f"{DEPRECATED_ENV_BACKEND} is deprecated: set {ENV_BACKEND}=triton"):
        assert resolve_backends(device, torch.float32) == KernelBackends("triton", "triton", "triton")
    monkeypatch.setenv(ENV_BACKEND, "torch")  # the new name wins, silently
    assert resolve_backends(device, torch.float32) == KernelBackends("torch", "torch", "torch")


def test_unavailable_backend_raises_naming_the_available_ones(monkeypatch):
    monkeypatch.setenv(ENV_BACKEND, "flash")
    with pytest.raises(BackendError, match=r"'flash' is not available on cpu with torch.float16; available: torch"):
        resolve_backends(CPU, torch.float16)
    with pytest.raises(BackendError, match="unknown backend 'cudnn'") as error:
        resolve_backends(CPU, torch.float16, "cudnn")
    assert isinstance(error.value, SieError) and isinstance(error.value, ValueError)


def test_an_unavailable_backend_says_what_it_needs():
    with pytest.raises(BackendError, match=r"'cpu' is not available on cpu with torch.float32 and head_dim 48; "
                                           r"available: .*\. cpu needs bfloat16 .* a head dim of 32, 64 or 128"):
        resolve_backends(CPU, torch.float32, "cpu", head_dim=48)
    with pytest.raises(BackendError, match="flash needs the flash-attn package"):
        resolve_backends(CPU, torch.float16, "flash")


def test_a_backend_is_read_in_any_case_as_the_environment_is(monkeypatch):
    assert resolve_backends(CPU, torch.float32, " Torch ") == KernelBackends("torch", "torch", "torch")
    monkeypatch.setenv(ENV_BACKEND, " TORCH")
    assert resolve_backends(CPU, torch.float32, "") == KernelBackends("torch", "torch", "torch")


@pytest.mark.parametrize(("value", "interpreted"), [("1", True), ("true", True), ("ON", True), ("yes", True),
                                                    ("0", False), ("false", False), ("", False)])
def test_triton_interpret_is_read_as_triton_reads_it(monkeypatch, value, interpreted):
    from sie.kernels.environment import triton_interpreted

    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert triton_interpreted() is interpreted


def test_resolved_kernels_are_the_implementations_of_the_chosen_backends(device):
    kernels = resolve_kernels(CPU, torch.float32)
    assert kernels.backends == KernelBackends("torch", "torch", "torch")
    assert (kernels.attention, kernels.layer_norm, kernels.linear_gelu) == (
        reference.varlen_attention_torch, reference.layer_norm_torch, reference.linear_gelu_torch)
    triton = resolve_kernels(device, torch.float32, "triton")
    assert triton.backends == KernelBackends("triton", "triton", "triton")
    assert [f.__module__ for f in (triton.attention, triton.layer_norm, triton.linear_gelu)] == [
        "sie.kernels.triton_attention", "sie.kernels.triton_layer_norm", "sie.kernels.triton_gelu"]


def test_linear_gelu_equals_the_matmul_then_bias_gelu(device):
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*shape, generator=generator) for shape in ((5, 16), (32, 16), (32,)))
    expected = bias_gelu(x @ weight.T, bias, backend="torch")
    for backend in ("torch", "triton"):
        out = resolve_kernels(device, torch.float32, backend).linear_gelu(x.to(device), weight.to(device),
                                                                          bias.to(device))
        torch.testing.assert_close(out.cpu(), expected, rtol=1e-5, atol=1e-5)


def test_automatic_choice_is_logged_once(caplog):
    dispatch._resolve.cache_clear()
    with caplog.at_level(logging.INFO, logger="sie.kernels.dispatch"):
        for _ in range(3):
            resolve_backends(CPU, torch.float32)
    assert [r.getMessage() for r in caplog.records] == [
        "sie kernels on cpu/float32: {'attention': 'torch', 'layer_norm': 'torch', 'gelu': 'torch'}"
    ]


@pytest.mark.parametrize(("cpu_ms", "chosen"), [(1.0, "cpu"), (3.0, "torch")])
def test_cpu_auto_times_the_cpu_kernel_against_sdpa(monkeypatch, cpu_ms, chosen):
    """In bf16 on a CPU with the C++ kernel, auto takes whichever of it and SDPA ran faster (the interpreted Triton
    kernel is never timed); the timings here stand in for the machine's."""
    monkeypatch.setattr(dispatch, "cpu_attention_runs_on", lambda device, dtype, head_dim=None: True)
    timed = []

    def seconds(run, device, dtype, head_dim):
        timed.append(run.__module__)
        return {"sie.kernels.cpu_attention": cpu_ms, "sie.kernels.reference": 2.0}[run.__module__] / 1000

    monkeypatch.setattr(dispatch, "attention_seconds", seconds)
    dispatch._resolve.cache_clear()
    try:
        assert resolve_backends(CPU, torch.bfloat16, head_dim=32).attention == chosen
    finally:
        dispatch._resolve.cache_clear()
    assert sorted(timed) == ["sie.kernels.cpu_attention", "sie.kernels.reference"]


def test_ops_reject_unknown_or_unavailable_backends():
    x = torch.randn(4, 8)
    with pytest.raises(BackendError, match="unknown layer_norm backend 'flash'"):
        layer_norm(x, torch.ones(8), torch.zeros(8), 1e-5, backend="flash")
    with pytest.raises(BackendError, match="unknown gelu backend 'cuda'"):
        bias_gelu(x, torch.zeros(8), backend="cuda")
    qkv = torch.randn(4, 2, 8)
    cu_seqlens = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(BackendError, match="attention backend 'flash' is not available on cpu"):
        varlen_attention(qkv, qkv, qkv, cu_seqlens, 4, backend="flash")


def test_ops_check_shapes():
    qkv = torch.randn(4, 2, 8)
    with pytest.raises(ValueError, match="cu_seqlens must be int32"):
        varlen_attention(qkv, qkv, qkv, torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match=r"expected q \[total_q, nheads, headdim\]"):
        varlen_attention(qkv, qkv[:, :1], qkv, torch.tensor([0, 4], dtype=torch.int32), 4)
    with pytest.raises(ValueError, match="residual"):
        layer_norm(torch.randn(4, 8), torch.ones(8), torch.zeros(8), 1e-5, torch.randn(3, 8))
    with pytest.raises(ValueError, match="bias"):
        bias_gelu(torch.randn(4, 8), torch.zeros(7))


def test_import_touches_neither_cuda_nor_triton():
    """`import sie` must work on any machine: Triton loads on first use, CUDA is probed only when resolving."""
    code = (
        "import sys, torch, sie.kernels\n"
        "assert not torch.cuda.is_initialized()\n"
        "assert 'triton' not in sys.modules, 'triton imported at import time'\n"
        "sie.kernels.resolve_backends(torch.device('cpu'), torch.float32)\n"
        "assert 'triton' not in sys.modules, 'triton imported to resolve CPU backends'\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in (ENV_BACKEND, DEPRECATED_ENV_BACKEND)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


def test_public_ops_stay_functions_once_implementations_load():
    """Loading a submodule binds it on the package: none may be named like a public op."""
    for op, backend in dispatch._IMPLEMENTATIONS:
        dispatch._load(op, backend)
    assert all(callable(getattr(sie.kernels, op)) for op in ("varlen_attention", "layer_norm", "bias_gelu", "rms_norm",
                                                                 "gated_activation"))


def test_flash_is_offered_only_for_head_dims_it_supports(monkeypatch):
    # The probe's inputs, as an H100 with PyTorch's flash varlen kernel would report them.
    monkeypatch.setattr(dispatch, "flash_implementation", lambda: "torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cuda = torch.device("cuda")
    assert dispatch.flash_runs_on(cuda, torch.float16, head_dim=64)
    assert not dispatch.flash_runs_on(cuda, torch.float16, head_dim=26), "TinyBERT's head dim 26 needs triton"
    assert not dispatch.flash_runs_on(cuda, torch.float32, head_dim=64)


def test_auto_orders_attention_backends_by_measured_time(caplog):
    from sie.kernels.selection import fastest_first

    timings = {"flash": 2.0e-3, "triton": 1.2e-3, "torch": 9.0e-3}
    with caplog.at_level(logging.INFO, logger="sie.kernels.selection"):
        assert fastest_first(("flash", "triton", "torch"), timings.__getitem__) == ("triton", "flash", "torch")
    assert "triton 1.200 ms, flash 2.000 ms, torch 9.000 ms" in caplog.text

    def failing(backend):
        if backend == "triton":
            raise RuntimeError("no kernel image for this card")
        return timings[backend]

    assert fastest_first(("flash", "triton", "torch"), failing) == ("flash", "torch", "triton")


def test_attention_op_picks_its_backend_for_its_head_dim(monkeypatch):
    """The public op resolves for q's head dim: the C++ kernel, fastest where it runs, does not run head dim 80, so
    auto takes another backend and asking for it by name raises BackendError."""
    from sie.kernels import cpu_attention

    monkeypatch.setattr(dispatch, "cpu_attention_runs_on",
                        lambda device, dtype, head_dim=None: head_dim in (None, *cpu_attention.HEAD_DIMS))
    monkeypatch.setattr(dispatch, "attention_seconds",
                        lambda run, device, dtype, head_dim: 0.0 if run.__module__ == cpu_attention.__name__ else 1.0)
    monkeypatch.setattr(cpu_attention, "cpu_extension", lambda: None)  # not run: it would fail on head dim 80
    q, k, v = torch.randn(3, 5, 2, 80).to(torch.bfloat16)
    cu_seqlens = torch.tensor([0, 2, 5], dtype=torch.int32)
    dispatch._resolve.cache_clear()
    dispatch._checked.cache_clear()
    try:
        out = varlen_attention(q, k, v, cu_seqlens, 3)
        with pytest.raises(BackendError, match="'cpu' is not available on cpu with torch.bfloat16 and head_dim 80"):
            varlen_attention(q, k, v, cu_seqlens, 3, backend="cpu")
    finally:
        dispatch._resolve.cache_clear()
        dispatch._checked.cache_clear()
    expected = reference.varlen_attention_torch(q, k, v, cu_seqlens, 3, cu_seqlens, 3, causal=False,
                                                softmax_scale=80**-0.5)
    assert torch.equal(out, expected)
