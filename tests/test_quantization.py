"""The int8 arithmetic (sie.quantization): per-row symmetric quantization, the int8 matmul against a float64
computation of the same quantized arithmetic, and how a model's linear layers are replaced."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sie.quantization
from sie.quantization import (EXACT_FP32_DEPTH, QMAX, WEIGHT_ROWS_PER_PASS, Int8Linear, int8_linear, integer_matmul,
                             linear_features, quantize_model, quantize_rows)


def test_quantize_rows_maps_each_rows_largest_magnitude_to_127_and_rounds_half_to_even():
    # Largest magnitudes of 127/64 and 127/8 give exact scales (1/64, 1/8), so the halves below are exact halves.
    x = torch.tensor([[0.5, -127 / 64, 63.5 / 64, 62.5 / 64], [0.0, 0.0, 0.0, 0.0], [0.0625, 0.1875, -127 / 8, 1.0]])
    q, scale = quantize_rows(x)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert scale.tolist() == [1 / 64, 1.0, 1 / 8]
    assert q.tolist() == [[32, -127, 64, 62], [0, 0, 0, 0], [0, 2, -127, 8]]


def test_tiny_rows_quantize_to_zeros_and_non_finite_rows_stay_non_finite():
    x = torch.tensor([[1e-39, -1e-39, 0.0], [1.0, float("nan"), 2.0], [float("inf"), 1.0, 0.0], [1.0, 0.5, -0.25]])
    q, scale = quantize_rows(x)
    assert q[0].tolist() == [0, 0, 0] and scale[0] == 1
    assert int(q.min()) >= -127 and int(q.max()) <= 127
    assert scale[1].isnan() and scale[2].isinf() and q[3].tolist() == [127, 64, -32]
    out = int8_linear(x, torch.ones(2, 3, dtype=torch.int8), torch.ones(2), None)
    assert not out[1:3].isfinite().any() and out[[0, 3]].isfinite().all()


def test_quantized_rows_are_within_half_a_step_of_the_input(rng):
    x = torch.from_numpy(rng.standard_normal((64, 96)).astype("float32")) * torch.logspace(-3, 3, 64)[:, None]
    q, scale = quantize_rows(x)
    assert int(q.abs().max(dim=1).values.min()) == 127 and int(q.min()) >= -127
    # Half a step, plus the fp32 rounding of q * scale and of the difference (up to 127 * 2^-24 steps each): 12 seeds
    # in 3,000 went past a bar of 0.5 (1 + 1e-6), by at most 2.1e-6 steps.
    assert torch.all((q.float() * scale[:, None] - x).abs() <= scale[:, None] * (0.5 + 2e-5))


@pytest.mark.parametrize("rows", [1, 7, 33, 128])
def test_int8_linear_equals_the_float64_computation_of_the_same_integers(rows, rng):
    """Integers accumulate exactly (compared with an int64 matmul), then one fp32 rescale: within fp32 rounding of
    the float64 value of (qx @ qw.T) * sx * sw + bias."""
    x = torch.from_numpy(rng.standard_normal((rows, 96)).astype("float32")) * 3
    weight = torch.from_numpy(rng.integers(-127, 128, (40, 96)).astype("int8"))
    weight_scale = torch.from_numpy(rng.uniform(1e-3, 1e-1, 40).astype("float32"))
    bias = torch.from_numpy(rng.standard_normal(40).astype("float32"))
    out = int8_linear(x, weight, weight_scale, bias)

    q, scale = quantize_rows(x)
    accumulated = q.long() @ weight.long().T
    assert torch.equal(integer_matmul(q, weight).long(), accumulated)
    expected = accumulated.double() * scale.double()[:, None] * weight_scale.double() + bias.double()
    torch.testing.assert_close(out.double(), expected, rtol=4e-7, atol=1e-6)


@pytest.mark.parametrize("int8_dot_products", [True, False], ids=["int_mm", "fp32-slices"])
@pytest.mark.parametrize("depth", [96, EXACT_FP32_DEPTH, EXACT_FP32_DEPTH + 1, 1536, 3 * EXACT_FP32_DEPTH + 7])
def test_integer_matmul_is_exact_on_either_path(depth, int8_dot_products, rng, monkeypatch):
    """Against an int64 matmul, on random integers and on the worst case, rows of +-127 whose every product has the
    same sign: past ``EXACT_FP32_DEPTH`` one fp32 matmul would round, its slices summed in int32 do not."""
    monkeypatch.setattr(sie.quantization, "cpu_has_int8_dot_products", lambda: int8_dot_products)
    q = torch.from_numpy(rng.integers(-QMAX, QMAX + 1, (9, depth)).astype("int8"))
    weight = torch.from_numpy(rng.integers(-QMAX, QMAX + 1, (24, depth)).astype("int8"))
    q[0], weight[0], weight[1] = QMAX, QMAX, -QMAX
    out = integer_matmul(q, weight)
    assert out.dtype == torch.int32 and out.shape == (9, 24)
    assert torch.equal(out.long(), q.long() @ weight.long().T)
    assert out[0, 0] == depth * QMAX * QMAX and out[0, 1] == -depth * QMAX * QMAX


@pytest.mark.parametrize("int8_dot_products", [True, False], ids=["int_mm", "fp32-slices"])
def test_int8_layer_gives_the_same_output_on_either_path(int8_dot_products, rng, monkeypatch):
    """The eager path's rescale and GELU on either integer matmul (the C++ passes, where they run, are tested
    below)."""
    monkeypatch.setattr(sie.quantization, "cpu_extension", lambda: None)
    x = torch.from_numpy(rng.standard_normal((21, 1536)).astype("float32"))
    weight = torch.from_numpy(rng.integers(-QMAX, QMAX + 1, (40, 1536)).astype("int8"))
    scale, bias = torch.full((40,), 0.02), torch.from_numpy(rng.standard_normal(40).astype("float32"))
    monkeypatch.setattr(sie.quantization, "cpu_has_int8_dot_products", lambda: True)
    expected = int8_linear(x, weight, scale, bias, gelu=True)
    monkeypatch.setattr(sie.quantization, "cpu_has_int8_dot_products", lambda: int8_dot_products)
    layer = Int8Linear(weight, scale, bias)
    assert torch.equal(layer(x, gelu=True), expected)


def test_a_weight_quantized_in_passes_equals_it_quantized_whole(rng):
    linear = nn.Linear(24, 2 * WEIGHT_ROWS_PER_PASS + 5)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(rng.standard_normal(linear.weight.shape)))
    quantized = Int8Linear.from_float(linear)
    weight, scale = quantize_rows(linear.weight.detach())
    assert torch.equal(quantized.weight, weight) and torch.equal(quantized.weight_scale, scale)


def test_int8_linear_layer_is_the_float_layer_up_to_quantization(rng):
    linear = nn.Linear(64, 48)
    quantized = Int8Linear.from_float(linear)
    assert quantized.weight.dtype == torch.int8 and quantized.weight.shape == (48, 64)
    x = torch.from_numpy(rng.standard_normal((10, 64)).astype("float32"))
    with torch.no_grad():
        error = (quantized(x) - linear(x)).abs().max()
        assert 0 < error < 0.05 * linear(x).abs().max()
        torch.testing.assert_close(linear_features(quantized, x, slice(16, 40)), quantized(x)[:, 16:40])
        torch.testing.assert_close(linear_features(linear, x, slice(16, 40)), linear(x)[:, 16:40])


def test_quantize_model_takes_given_integers_exactly_and_quantizes_the_rest(rng):
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Sequential(nn.Linear(16, 4, bias=False)))
    weight = torch.from_numpy(rng.integers(-127, 128, (16, 8)).astype("int8"))
    scale = torch.full((16,), 0.01)
    quantize_model(model, {"0.weight": weight, "0.weight_scale": scale})
    assert isinstance(model[0], Int8Linear) and isinstance(model[2][0], Int8Linear)
    assert torch.equal(model[0].weight, weight) and torch.equal(model[0].weight_scale, scale)
    assert model[2][0].bias is None and model[2][0].weight.dtype == torch.int8
    assert model(torch.ones(3, 8)).shape == (3, 4)


def test_integers_for_another_model_are_refused_naming_them():
    model = nn.Sequential(nn.Linear(8, 16))
    with pytest.raises(ValueError, match="fit no linear layer: \\['1.weight'"):
        quantize_model(model, {"1.weight": torch.zeros(16, 8, dtype=torch.int8), "1.weight_scale": torch.ones(16)})
    with pytest.raises(ValueError, match="without a scale: \\['0.weight'"):
        quantize_model(nn.Sequential(nn.Linear(8, 16)), {"0.weight": torch.zeros(16, 8, dtype=torch.int8)})


def test_integers_of_another_shape_are_refused_naming_the_layer():
    model = nn.Sequential(nn.Linear(8, 16))
    with pytest.raises(ValueError, match="0: int8 weight"):
        quantize_model(model, {"0.weight": torch.zeros(8, 8, dtype=torch.int8), "0.weight_scale": torch.ones(8)})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("rows", "features"), [(1, 7), (37, 96), (130, 384), (64, 1536)])
def test_the_cpp_passes_equal_the_eager_ops_bit_for_bit(sie_cpu_ops, rows, features, dtype, rng):
    """quantize_rows (padded to 64 rows with zeros) and rescale_rows_ (in place), the int8 mode's passes where sie's
    C++ CPU kernels run, against the eager functions on rows of very different magnitudes, with all-zero, underflowing,
    NaN and inf rows among them, on a strided view of a wider activation."""
    wide = torch.from_numpy(rng.standard_normal((rows, features + 5)).astype("float32"))
    x = (wide * torch.logspace(-4, 4, rows)[:, None])[:, 2:features + 2].to(dtype)
    for row, value in ((0, 0.0), (rows // 2, 1e-39), (rows // 3, float("nan")), (rows - 1, float("inf"))):
        x[row, : max(1, features // 2)] = value
        if value == 0.0 or value == 1e-39:
            x[row] = value
    q, scale = sie_cpu_ops.quantize_rows(x, 64)
    expected_q, expected_scale = quantize_rows(x)
    assert q.shape == (rows + (-rows % 64), features) and not q[rows:].any()
    finite = expected_scale.isfinite()
    assert torch.equal(scale[finite], expected_scale[finite]) and torch.equal(q[:rows][finite], expected_q[finite])
    assert torch.equal(scale.isnan(), expected_scale.isnan()) and torch.equal(scale.isinf(), expected_scale.isinf())

    weight = torch.from_numpy(rng.integers(-127, 128, (48, features)).astype("int8"))
    weight_scale = torch.from_numpy(rng.uniform(1e-3, 1e-1, 48).astype("float32"))
    bias = torch.from_numpy(rng.standard_normal(48).astype("float32"))
    accumulated = torch._int_mm(q, weight.t())
    for b in (bias, None):
        expected = accumulated[:rows].float().mul_(scale[:, None]).mul_(weight_scale)
        expected = expected if b is None else expected.add_(b)
        out = sie_cpu_ops.rescale_rows_(accumulated.clone(), rows, scale, weight_scale, b, False)
        torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    assert not int8_linear(x, weight, weight_scale, bias)[~finite].isfinite().any()


def test_the_cpp_rescale_with_gelu_is_as_exact_as_pytorchs_gelu(sie_cpu_ops):
    """GELU fused into the rescale: PyTorch's fp32 GELU formula with another exp. Against GELU in float64 over -12
    to 12, its error is at most 2.5e-7 (1 + |x|) and no larger than PyTorch's own fp32 GELU's (measured: 1.1e-7 and
    2.5e-7 (1 + |x|)); NaN, zeros and huge values come out as PyTorch's, and GELU(inf) is inf (PyTorch's is
    NaN)."""
    acc = torch.linspace(-2**20, 2**20, 100_001).round().int()[None]
    row_scale, ones, zeros = torch.tensor([12.0 / 2**20]), torch.ones(acc.shape[1]), torch.zeros(acc.shape[1])
    x = acc.float() * row_scale
    exact = torch.nn.functional.gelu(x.double())
    ours = (sie_cpu_ops.rescale_rows_(acc.clone(), 1, row_scale, ones, zeros, True).double() - exact).abs()
    pytorch = (torch.nn.functional.gelu(x).double() - exact).abs()
    assert (ours / (1 + x.double().abs())).max() <= 2.5e-7 and ours.max() <= pytorch.max()
    special = torch.tensor([float("nan"), 0.0, -1.0, -2.0, 1e30, float("inf")])
    out = sie_cpu_ops.rescale_rows_(torch.ones(1, 6, dtype=torch.int32), 1, torch.ones(1), torch.ones(6), special,
                                    True)
    torch.testing.assert_close(out[0, :5], torch.nn.functional.gelu(1 + special[:5]), equal_nan=True)
    assert out[0, 5] == float("inf")
