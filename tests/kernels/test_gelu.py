"""bias_gelu (bias add + exact erf GELU) on every backend against a float64 reference."""

import pytest
import torch

from sie.kernels import bias_gelu
from tests.kernels.checks import DTYPES, assert_matches, skip_unless_available
from sie.testing.references import reference_bias_gelu

# (total_tokens, n): one token; MiniLM's FFN width 1536 (one and a half column blocks); an odd width.
SHAPES = [(1, 1536), (37, 1536), (6, 3000), (70, 64)]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64(shape, dtype, backend, device):
    skip_unless_available("gelu", backend, device, dtype)
    generator = torch.Generator().manual_seed(shape[0] + shape[1])
    x = (torch.randn(*shape, generator=generator) * 3).to(device=device, dtype=dtype)
    bias = torch.randn(shape[1], generator=generator).to(device=device, dtype=dtype)
    assert_matches(bias_gelu(x, bias, backend=backend), reference_bias_gelu(x, bias), dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_strided_rows(backend, device):
    """x as a column slice of a wider tensor, as when the FFN input is a view."""
    dtype = torch.float32
    skip_unless_available("gelu", backend, device, dtype)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(7, 300, generator=generator).to(device)[:, 20:270]
    bias = torch.randn(250, generator=generator).to(device)
    assert_matches(bias_gelu(x, bias, backend=backend), reference_bias_gelu(x, bias), dtype)
