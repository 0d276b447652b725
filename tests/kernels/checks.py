"""Tolerances and the comparison every kernel test uses."""

import pytest
import torch

from sie.kernels import available_backends

# Error relative to the reference's largest magnitude, vs a float64 reference on the same (rounded) inputs.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = list(TOLERANCE)


def assert_matches(out: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> None:
    """Every element of ``out`` (in ``dtype``) is finite and within TOLERANCE[dtype] of the float64 reference."""
    assert out.dtype == dtype and out.shape == reference.shape
    out64 = out.double().cpu()
    assert torch.isfinite(out64).all(), f"{(~torch.isfinite(out64)).sum().item()} elements not written or not finite"
    error = (out64 - reference.cpu()).abs().max().item() / reference.abs().max().item()
    assert error <= TOLERANCE[dtype], f"relative error {error:.2e} > {TOLERANCE[dtype]:.0e} for {dtype}"


def skip_unless_available(op: str, backend: str, device: torch.device, dtype: torch.dtype) -> None:
    """Skip, with the reason, a backend that cannot run ``op`` on this device and dtype."""
    available = available_backends(device, dtype)[op]
    if backend not in available:
        pytest.skip(f"{op} backend {backend!r} does not run on {device} with {dtype} (available: {available})")
