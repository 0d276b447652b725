"""rms_norm (residual add + RMSNorm, returning the norm and the sum) on every backend against a float64 reference."""

import pytest
import torch

from sie.kernels import rms_norm
from sie.testing.references import reference_rms_norm
from tests.kernels.checks import DTYPES, assert_matches, skip_unless_available

# (rows, hidden): one row; Qwen2-0.5B's 896 (not a power of two); more rows than one program holds; an odd width
# that leaves most of the last block masked.
SHAPES = [(1, 896), (37, 896), (70, 64), (5, 1000)]


def inputs(rows: int, hidden: int, dtype, device, generator: torch.Generator):
    """x, residual and weight as a decoder's are: activations of a few units, weights near 1."""
    x = (torch.randn(rows, hidden, generator=generator) * 3).to(device=device, dtype=dtype)
    residual = torch.randn(rows, hidden, generator=generator).to(device=device, dtype=dtype)
    weight = (1 + 0.1 * torch.randn(hidden, generator=generator)).to(device=device, dtype=dtype)
    return x, residual, weight


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64(shape, dtype, with_residual, backend, device):
    skip_unless_available("layer_norm", backend, device, dtype)
    generator = torch.Generator().manual_seed(shape[0] * shape[1] + with_residual)
    x, residual, weight = inputs(*shape, dtype, device, generator)
    residual = residual if with_residual else None
    normed, summed = rms_norm(x, weight, 1e-6, residual, backend=backend)
    expected_normed, expected_summed = reference_rms_norm(x, weight, 1e-6, residual)
    assert_matches(normed, expected_normed, dtype)
    assert_matches(summed, expected_summed, dtype)
    if residual is None:
        assert summed is x, "without a residual the sum is x itself, not a copy"


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_strided_rows_and_fp32_weights(backend, device):
    """x and residual as column slices of a wider tensor (row stride > hidden), bf16 activations, fp32 weight."""
    dtype = torch.bfloat16
    skip_unless_available("layer_norm", backend, device, dtype)
    generator = torch.Generator().manual_seed(3)
    wide = (torch.randn(9, 200, generator=generator) * 3).to(device=device, dtype=dtype)
    x, residual = wide[:, :96], wide[:, 100:196]
    weight = (1 + 0.1 * torch.randn(96, generator=generator)).to(device)
    normed, summed = rms_norm(x, weight, 1e-6, residual, backend=backend)
    expected_normed, expected_summed = reference_rms_norm(x, weight, 1e-6, residual)
    assert_matches(normed, expected_normed, dtype)
    assert_matches(summed, expected_summed, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_rounds_like_the_torch_backend(dtype, device):
    """The kernel rounds where transformers' Qwen RMSNorm does (the sum, the normalised value, the weight and the
    product, each in x's dtype): the sum is bit-identical to the torch backend's, the norm within one rounding of
    its fp32 statistics: a few ulps."""
    skip_unless_available("layer_norm", "triton", device, dtype)
    generator = torch.Generator().manual_seed(11)
    x, residual, weight = inputs(37, 896, dtype, device, generator)
    normed, summed = rms_norm(x, weight, 1e-6, residual, backend="triton")
    expected_normed, expected_summed = rms_norm(x, weight, 1e-6, residual, backend="torch")
    assert torch.equal(summed, expected_summed)
    if dtype == torch.float32:
        torch.testing.assert_close(normed, expected_normed, rtol=2e-6, atol=2e-6)
    else:
        # An fp32 statistic that differs in its last bit (another summation order, a GPU's approximate rsqrt) may
        # flip the rounding of the normalised value, and then of its product with the weight.
        ulp = torch.finfo(dtype).eps * expected_normed.abs().float()
        assert ((normed.float() - expected_normed.float()).abs() <= 2 * ulp).all()
