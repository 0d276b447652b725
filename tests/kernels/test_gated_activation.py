"""gated_activation (act(gate) * up: SwiGLU and exact-erf GeGLU) on every backend against a float64 reference."""

import pytest
import torch

from sie.kernels import gated_activation
from sie.testing.references import reference_gated_activation
from tests.kernels.checks import DTYPES, assert_matches, skip_unless_available

# (rows, n), x being [rows, 2n]: one row; ModernBERT-base's 1152 (one and an eighth column blocks); an odd width.
SHAPES = [(1, 1152), (37, 1152), (6, 1000), (70, 48)]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("activation", ["silu", "gelu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64(shape, dtype, activation, backend, device):
    skip_unless_available("layer_norm", backend, device, dtype)
    generator = torch.Generator().manual_seed(shape[0] + shape[1])
    rows, n = shape
    x = (torch.randn(rows, 2 * n, generator=generator) * 3).to(device=device, dtype=dtype)
    out = gated_activation(x, activation, backend=backend)
    assert out.shape == (rows, n)
    assert_matches(out, reference_gated_activation(x, activation), dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("activation", ["silu", "gelu"])
def test_strided_rows(activation, backend, device):
    """x as a column slice of a wider tensor, as when the projection's output is a view."""
    dtype = torch.float16
    skip_unless_available("layer_norm", backend, device, dtype)
    generator = torch.Generator().manual_seed(5)
    x = (torch.randn(7, 700, generator=generator) * 3).to(device=device, dtype=dtype)[:, 50:650]
    assert_matches(gated_activation(x, activation, backend=backend), reference_gated_activation(x, activation), dtype)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        gated_activation(torch.randn(2, 8), "relu")
