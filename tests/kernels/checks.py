"""The comparison and the skip every kernel test uses."""

import pytest
import torch

from sie.kernels import available_backends
from sie.testing.references import TOLERANCE, relative_error

DTYPES = list(TOLERANCE)


def assert_matches(out: torch.Tensor, reference: torch.Tensor, dtype: torch.dtype) -> None:
    """Every element of ``out`` (in ``dtype``) is finite and within TOLERANCE[dtype] of the float64 reference."""
    assert out.dtype == dtype and out.shape == reference.shape
    unwritten = (~torch.isfinite(out)).sum().item()
    assert unwritten == 0, f"{unwritten} elements not written or not finite"
    error = relative_error(out, reference)
    assert error <= TOLERANCE[dtype], f"relative error {error:.2e} > {TOLERANCE[dtype]:.0e} for {dtype}"


def skip_unless_available(op: str, backend: str, device: torch.device, dtype: torch.dtype) -> None:
    """Skip, with the reason, a backend that cannot run ``op`` on this device and dtype."""
    available = available_backends(device, dtype)[op]
    if backend not in available:
        pytest.skip(f"{op} backend {backend!r} does not run on {device} with {dtype} (available: {available})")
