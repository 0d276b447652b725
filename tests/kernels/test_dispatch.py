"""Backend resolution: automatic choices, the environment override, explicit requests and their errors."""

import logging
import os
import subprocess
import sys

import pytest
import torch

import sie.kernels
from sie.kernels import (
    ENV_ATTENTION_BACKEND,
    KernelBackends,
    bias_gelu,
    dispatch,
    layer_norm,
    resolve_backends,
    varlen_attention,
)

CPU = torch.device("cpu")


def test_cpu_auto_runs_torch_everywhere(monkeypatch):
    monkeypatch.delenv(ENV_ATTENTION_BACKEND, raising=False)
    backends = resolve_backends(CPU, torch.float32)
    assert backends == KernelBackends(attention="torch", layer_norm="torch", gelu="torch")
    assert backends.as_dict() == {"attention": "torch", "layer_norm": "torch", "gelu": "torch"}


def test_environment_overrides_auto(monkeypatch, device):
    """On CPU, tests run Triton's interpreter: "triton" is available there, though never chosen automatically."""
    monkeypatch.setenv(ENV_ATTENTION_BACKEND, "triton")
    backends = resolve_backends(device, torch.float32)
    assert backends == KernelBackends(attention="triton", layer_norm="triton", gelu="triton")
    # An explicit argument outranks the environment.
    assert resolve_backends(device, torch.float32, "torch") == KernelBackends("torch", "torch", "torch")


def test_unavailable_backend_raises_naming_the_available_ones(monkeypatch):
    monkeypatch.setenv(ENV_ATTENTION_BACKEND, "flash")
    with pytest.raises(ValueError, match=r"'flash' is not available on cpu with torch.float16; available: torch"):
        resolve_backends(CPU, torch.float16)
    with pytest.raises(ValueError, match="unknown attention backend 'cudnn'"):
        resolve_backends(CPU, torch.float16, "cudnn")


def test_automatic_choice_is_logged_once(caplog, monkeypatch):
    monkeypatch.delenv(ENV_ATTENTION_BACKEND, raising=False)
    dispatch._resolve.cache_clear()
    with caplog.at_level(logging.INFO, logger="sie.kernels.dispatch"):
        for _ in range(3):
            resolve_backends(CPU, torch.bfloat16)
    assert [r.getMessage() for r in caplog.records] == [
        "sie kernels on cpu/bfloat16: {'attention': 'torch', 'layer_norm': 'torch', 'gelu': 'torch'}"
    ]


def test_ops_reject_unknown_or_unavailable_backends():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="unknown layer_norm backend 'flash'"):
        layer_norm(x, torch.ones(8), torch.zeros(8), 1e-5, backend="flash")
    with pytest.raises(ValueError, match="unknown gelu backend 'cuda'"):
        bias_gelu(x, torch.zeros(8), backend="cuda")
    qkv = torch.randn(4, 2, 8)
    cu_seqlens = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match="attention backend 'flash' is not available on cpu"):
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
    env = {key: value for key, value in os.environ.items() if key != ENV_ATTENTION_BACKEND}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr


def test_public_ops_stay_functions_once_implementations_load():
    """Loading a submodule binds it on the package: none may be named like a public op."""
    for op, backend in dispatch._IMPLEMENTATIONS:
        dispatch._load(op, backend)
    assert all(callable(f) for f in (sie.kernels.varlen_attention, sie.kernels.layer_norm, sie.kernels.bias_gelu))


def test_flash_is_offered_only_for_head_dims_it_supports(monkeypatch):
    # The probe's inputs, as an H100 with PyTorch's flash varlen kernel would report them.
    monkeypatch.setattr(dispatch, "flash_implementation", lambda: "torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cuda = torch.device("cuda")
    assert dispatch.flash_runs_on(cuda, torch.float16, head_dim=64)
    assert not dispatch.flash_runs_on(cuda, torch.float16, head_dim=26), "TinyBERT's head dim 26 needs triton"
    assert not dispatch.flash_runs_on(cuda, torch.float32, head_dim=64)
