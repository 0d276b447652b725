"""layer_norm (residual add + LayerNorm) on every backend against a float64 reference."""

import pytest
import torch

from sie.kernels import layer_norm
from tests.kernels.checks import DTYPES, assert_matches, skip_unless_available
from sie.testing.references import reference_layer_norm

# (total_tokens, hidden): one token; MiniLM's 384 (not a power of two); more rows than one program holds; an odd
# width that leaves most of the last block masked.
SHAPES = [(1, 384), (37, 384), (70, 64), (5, 1000)]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64(shape, dtype, with_residual, backend, device):
    skip_unless_available("layer_norm", backend, device, dtype)
    generator = torch.Generator().manual_seed(shape[0] * shape[1] + with_residual)
    total_tokens, hidden = shape
    # Offset and scale the activations as a transformer's are: the statistics must not lose the small variance.
    x = (torch.randn(total_tokens, hidden, generator=generator) * 3 + 5).to(device=device, dtype=dtype)
    residual = torch.randn(total_tokens, hidden, generator=generator).to(device=device, dtype=dtype)
    weight = (1 + 0.1 * torch.randn(hidden, generator=generator)).to(device=device, dtype=dtype)
    bias = (0.1 * torch.randn(hidden, generator=generator)).to(device=device, dtype=dtype)
    residual = residual if with_residual else None
    out = layer_norm(x, weight, bias, 1e-12, residual, backend=backend)
    assert_matches(out, reference_layer_norm(x, weight, bias, 1e-12, residual), dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_strided_rows_and_fp32_weights(backend, device):
    """x as a column slice of a wider tensor (row stride > hidden) with bf16 activations and fp32 parameters."""
    dtype = torch.bfloat16
    skip_unless_available("layer_norm", backend, device, dtype)
    generator = torch.Generator().manual_seed(3)
    wide = torch.randn(9, 200, generator=generator).to(device=device, dtype=dtype)
    x, residual = wide[:, :96], wide[:, 100:196]
    weight = torch.randn(96, generator=generator).to(device)
    bias = torch.randn(96, generator=generator).to(device)
    out = layer_norm(x, weight, bias, 1e-5, residual, backend=backend)
    assert_matches(out, reference_layer_norm(x, weight, bias, 1e-5, residual), dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("shape", [(0, 384), (3, 0)], ids=["no-rows", "no-columns"])
def test_empty_inputs_give_empty_outputs(shape, backend, device):
    dtype = torch.float32
    skip_unless_available("layer_norm", backend, device, dtype)
    x = torch.randn(shape, device=device)
    weight, bias = torch.ones(shape[1], device=device), torch.zeros(shape[1], device=device)
    assert layer_norm(x, weight, bias, 1e-5, x, backend=backend).shape == shape
