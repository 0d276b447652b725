"""The int8 graph reader on small graphs built here: keys, layouts and values checked against ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sie.errors import UnsupportedModelError
from sie.hub.onnx_convert import dequantized_state_dict, int8_state_dict

onnx = pytest.importorskip("onnx", reason="the onnx package (extra 'convert') is not installed")
onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

VOCAB, HIDDEN, OUT, TOKENS = 11, 8, 5, 7  # OUT != HIDDEN so a missing transpose shows in the shapes


def int8_graph(rng: np.random.Generator, extra: list[onnx.TensorProto] | None = None,
               weight_zero_point: int = -3) -> onnx.ModelProto:
    """An embedding read by Gather + DequantizeLinear and a linear layer MatMulInteger -> Cast -> Mul -> Add,
    laid out as quantize_dynamic writes them (the linear weight under an exporter name, [in, out]).

    The linear weights are 7-bit, as quantize_dynamic's ``reduce_range`` writes them: on a CPU without VNNI,
    ONNX Runtime sums u8 x s8 products in pairs into int16 (vpmaddubsw), which saturates on full-range weights."""
    weights = [
        numpy_helper.from_array(rng.integers(0, 256, (VOCAB, HIDDEN), dtype=np.uint8), "embed.weight_quantized"),
        numpy_helper.from_array(np.array(0.02, dtype=np.float32), "embed.weight_scale"),
        numpy_helper.from_array(np.array(131, dtype=np.uint8), "embed.weight_zero_point"),
        numpy_helper.from_array(rng.integers(-64, 64, (HIDDEN, OUT), dtype=np.int8), "onnx::MatMul_7_quantized"),
        numpy_helper.from_array(np.array(0.003, dtype=np.float32), "onnx::MatMul_7_scale"),
        numpy_helper.from_array(np.array(weight_zero_point, dtype=np.int8), "onnx::MatMul_7_zero_point"),
        numpy_helper.from_array(rng.standard_normal(OUT).astype(np.float32), "proj.bias"),
        *(extra or []),
    ]
    nodes = [
        helper.make_node("Gather", ["embed.weight_quantized", "ids"], ["gathered"]),
        helper.make_node("DequantizeLinear", ["gathered", "embed.weight_scale", "embed.weight_zero_point"],
                         ["embedded"]),
        helper.make_node("MatMulInteger", ["acts", "onnx::MatMul_7_quantized", "", "onnx::MatMul_7_zero_point"],
                         ["product"], name="/proj/MatMul_quant"),
        helper.make_node("Cast", ["product"], ["product_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["product_float", "onnx::MatMul_7_scale"], ["scaled"]),
        helper.make_node("Add", ["proj.bias", "scaled"], ["projected"]),
    ]
    graph = helper.make_graph(
        nodes, "int8",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [TOKENS]),
         helper.make_tensor_value_info("acts", TensorProto.UINT8, [TOKENS, HIDDEN])],
        [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [TOKENS, HIDDEN]),
         helper.make_tensor_value_info("projected", TensorProto.FLOAT, [TOKENS, OUT])],
        weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8  # what every supported onnxruntime reads
    return model


def test_state_dict_reproduces_the_graph_outputs() -> None:
    rng = np.random.default_rng(0)
    model = int8_graph(rng)
    ids = rng.integers(0, VOCAB, TOKENS)
    acts = rng.integers(0, 256, (TOKENS, HIDDEN), dtype=np.uint8)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    embedded, projected = session.run(["embedded", "projected"], {"ids": ids, "acts": acts})

    state = {key: torch.from_numpy(value) for key, value in dequantized_state_dict(model).items()}
    assert {key: tuple(value.shape) for key, value in state.items()} == {
        "embed.weight": (VOCAB, HIDDEN), "proj.weight": (OUT, HIDDEN), "proj.bias": (OUT,)}
    assert all(value.dtype == torch.float32 for value in state.values())
    # DequantizeLinear is one float32 product per element: the table must match bit for bit.
    assert torch.equal(torch.nn.functional.embedding(torch.from_numpy(ids), state["embed.weight"]),
                       torch.from_numpy(embedded))
    # ORT sums integers exactly and scales once; torch sums scaled floats: equal up to rounding.
    linear = torch.nn.functional.linear(torch.from_numpy(acts).float(), state["proj.weight"], state["proj.bias"])
    torch.testing.assert_close(linear, torch.from_numpy(projected), rtol=1e-5, atol=1e-5)


def test_initializer_without_a_place_is_refused() -> None:
    stray = numpy_helper.from_array(np.arange(3, dtype=np.int64), "onnx::Slice_208")
    with pytest.raises(UnsupportedModelError, match="onnx::Slice_208"):
        dequantized_state_dict(int8_graph(np.random.default_rng(1), extra=[stray]))


def test_quantized_weight_read_by_an_unknown_op_is_refused() -> None:
    model = int8_graph(np.random.default_rng(2))
    model.graph.node.append(helper.make_node("Identity", ["embed.weight_quantized"], ["copied"]))
    with pytest.raises(UnsupportedModelError, match="embed.weight_quantized"):
        dequantized_state_dict(model)


def test_int8_state_dict_keeps_symmetric_linear_weights_only() -> None:
    symmetric = int8_graph(np.random.default_rng(3), weight_zero_point=0)
    integers = int8_state_dict(symmetric)
    assert sorted(integers) == ["proj.weight", "proj.weight_scale"]  # the uint8 embedding table stays float
    quantized = numpy_helper.to_array(next(t for t in symmetric.graph.initializer
                                           if t.name == "onnx::MatMul_7_quantized"))
    assert integers["proj.weight"].dtype == np.int8 and np.array_equal(integers["proj.weight"], quantized.T)
    assert integers["proj.weight_scale"].shape == (OUT,) and np.all(integers["proj.weight_scale"] == np.float32(0.003))
    # Dequantizing the kept integers gives the float checkpoint's weight bit for bit.
    weight = integers["proj.weight"].astype(np.float32) * integers["proj.weight_scale"][:, None]
    assert np.array_equal(weight, dequantized_state_dict(symmetric)["proj.weight"])
    # A weight with a zero point other than 0 has no symmetric int8 form: left to per-channel quantization.
    assert int8_state_dict(int8_graph(np.random.default_rng(3))) == {}
