"""Converts an ONNX Runtime dynamic-int8 BERT cross-encoder graph back into a transformers checkpoint.

``onnxruntime.quantization.quantize_dynamic`` stores each weight as ``<base>_quantized`` (int8 or uint8)
with a scalar ``<base>_scale`` and ``<base>_zero_point``; the float weight it stands for is
``(q - zero_point) * scale``, the exact value ONNX Runtime's ``DequantizeLinear`` computes. Embeddings are
``[rows, hidden]`` tables read by ``Gather``; linear weights feed ``MatMulInteger`` as ``[in, out]`` (torch
``Linear`` keeps ``[out, in]``) and many carry exporter names such as ``onnx::MatMul_1662``, so their
checkpoint key comes from the bias their output is added to. Float initializers (biases, LayerNorm) already
carry checkpoint keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sie.errors import UnsupportedModelError

QUANTIZED_SUFFIX = "_quantized"
# A MatMulInteger output reaches its bias Add through Cast and the rescaling Mul: a few hops at most.
MAX_HOPS_TO_BIAS = 4


def load_graph(path: Path) -> Any:
    """Reads an ONNX model (``onnx.ModelProto``) with its initializers."""
    try:
        import onnx  # optional dependency (extra "convert"): only converting needs it
    except ImportError as error:
        raise ImportError("converting the default model reads its ONNX graph with the onnx package: "
                          "pip install 'sie[convert]'") from error
    return onnx.load(str(path))


def initializers(model: Any) -> dict[str, np.ndarray]:
    """Every initializer of the graph as a numpy array, by name."""
    from onnx import numpy_helper

    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}


def dequantize(quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32, as ONNX Runtime's DequantizeLinear computes it."""
    # The difference of two 8-bit integers is exact in float32, so one float32 product remains, as in ORT.
    shifted = quantized.astype(np.int32) - zero_point.astype(np.int32)
    return shifted.astype(np.float32) * scale.astype(np.float32)


def _consumers(model: Any) -> dict[str, list[Any]]:
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _bias_key(matmul: Any, consumers: dict[str, list[Any]], floats: set[str]) -> str:
    """The float bias added to ``matmul``'s output, followed through single-consumer Cast/Mul hops."""
    node = matmul
    for _ in range(MAX_HOPS_TO_BIAS):
        following = consumers.get(node.output[0], [])
        if len(following) != 1:
            break
        node = following[0]
        if node.op_type == "Add":
            biases = [name for name in node.input if name in floats and name.endswith(".bias")]
            if len(biases) == 1:
                return biases[0]
            break
    raise UnsupportedModelError(f"cannot find the bias that follows the int8 MatMul {matmul.name!r}")


def _quantized_initializers(
    model: Any, tensors: dict[str, np.ndarray], floats: set[str]
) -> Iterator[tuple[str, str, bool]]:
    """Every quantized initializer as (base name, checkpoint key, linear): ``base`` + ``_quantized``/``_scale``/
    ``_zero_point`` are its arrays; ``linear`` says a MatMulInteger reads it (an ``[in, out]`` weight), else a
    Gather (an embedding table). Raises UnsupportedModelError for any other reader."""
    consumers = _consumers(model)
    for name in tensors:
        if not name.endswith(QUANTIZED_SUFFIX):
            continue
        base = name[: -len(QUANTIZED_SUFFIX)]
        readers = {node.op_type: node for node in consumers.get(name, [])}
        if set(readers) == {"Gather"}:
            yield base, base, False
        elif set(readers) == {"MatMulInteger"}:
            bias = _bias_key(readers["MatMulInteger"], consumers, floats)
            yield base, bias[: -len(".bias")] + ".weight", True
        else:
            raise UnsupportedModelError(f"quantized initializer {name!r} is read by {sorted(readers)}, "
                                        "expected only Gather (embeddings) or MatMulInteger (linear layers)")


def _float_names(tensors: dict[str, np.ndarray]) -> set[str]:
    return {name for name, array in tensors.items() if array.dtype == np.float32 and array.ndim > 0}


def dequantized_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The checkpoint's float32 tensors, keyed like transformers' ``BertForSequenceClassification``.

    Embedding tables come out ``[rows, hidden]``; linear weights ``[out_features, in_features]``.
    Raises UnsupportedModelError when an initializer has no place in the checkpoint.
    """
    tensors = initializers(model)
    floats = _float_names(tensors)
    # Copies: arrays read from the protobuf are read-only views of its bytes.
    state: dict[str, np.ndarray] = {name: tensors[name].copy() for name in floats}
    used = set(floats)
    for base, key, linear in _quantized_initializers(model, tensors, floats):
        parts = [f"{base}{suffix}" for suffix in (QUANTIZED_SUFFIX, "_scale", "_zero_point")]
        weight = dequantize(*(tensors[part] for part in parts))
        state[key] = np.ascontiguousarray(weight.T) if linear else weight
        used.update(parts)
    leftover = sorted(set(tensors) - used)
    if leftover:
        raise UnsupportedModelError(f"initializers with no place in the checkpoint: {leftover[:5]}")
    return state


def int8_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The linear layers' own integers, for sie's int8 mode (``sie.quantization.INT8_WEIGHTS``).

    For each MatMulInteger weight stored as symmetric int8 (zero point 0): ``<key>.weight`` int8
    ``[out_features, in_features]`` and ``<key>.weight_scale`` float32 ``[out_features]`` (the tensor's one scale
    for every channel), so that ``weight * weight_scale[:, None]`` is the dequantized weight. Embedding tables are
    left out. Empty when any linear weight has another encoding: the int8 mode then quantizes the whole model from
    the float checkpoint, rather than fusing layers (query, key and value) of which only some have integers.
    """
    tensors = initializers(model)
    state: dict[str, np.ndarray] = {}
    for base, key, linear in _quantized_initializers(model, tensors, _float_names(tensors)):
        if not linear:
            continue
        quantized, scale, zero_point = (tensors[f"{base}{suffix}"] for suffix in (QUANTIZED_SUFFIX, "_scale",
                                                                                     "_zero_point"))
        if quantized.dtype != np.int8 or np.any(zero_point != 0) or scale.size != 1:
            return {}
        state[key] = np.ascontiguousarray(quantized.T)
        state[key.removesuffix(".weight") + ".weight_scale"] = np.full(quantized.shape[1], scale, dtype=np.float32)
    return state


def _constant(model: Any, name: str) -> np.ndarray:
    from onnx import numpy_helper

    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    raise UnsupportedModelError(f"the graph has no Constant named {name!r}")


def _attention_heads(model: Any, query_bias: str) -> int:
    """Heads of the first layer's self-attention: the Reshape of the query to ``[batch, -1, nheads, headdim]``."""
    consumers = _consumers(model)
    producers = {output: node for node in model.graph.node for output in node.output}
    added = next(node for node in model.graph.node if node.op_type == "Add" and query_bias in node.input)
    reshape = next((node for node in consumers.get(added.output[0], []) if node.op_type == "Reshape"), None)
    if reshape is None or producers.get(reshape.input[1]) is None:
        raise UnsupportedModelError("cannot find the attention reshape that gives the number of heads")
    shape_parts = producers[reshape.input[1]].input
    return int(_constant(model, shape_parts[-2]).reshape(-1)[0])


def _layer_norm_eps(model: Any) -> float:
    """The epsilon added to the variance in the embeddings' LayerNorm (the Add right after ReduceMean)."""
    producers = {output: node for node in model.graph.node for output in node.output}
    for node in model.graph.node:
        if node.op_type != "Add" or "LayerNorm" not in node.name:
            continue
        sources = [producers.get(name) for name in node.input]
        if sources[0] is not None and sources[0].op_type == "ReduceMean" and sources[1] is not None \
                and sources[1].op_type == "Constant":
            # Stored as float32: 1e-12 reads back as 9.99999996e-13; keep the decimal the model was built with.
            return float(f"{float(_constant(model, node.input[1])):.6g}")
    raise UnsupportedModelError("cannot find the LayerNorm epsilon in the graph")


def bert_config(model: Any, state: dict[str, np.ndarray]) -> dict[str, Any]:
    """A transformers ``BertConfig`` dict (``BertForSequenceClassification``) matching ``state``'s shapes."""
    vocab_size, hidden = state["bert.embeddings.word_embeddings.weight"].shape
    layers = {int(key.split(".")[3]) for key in state if key.startswith("bert.encoder.layer.")}
    num_labels = state["classifier.weight"].shape[0]
    return {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "vocab_size": int(vocab_size),
        "hidden_size": int(hidden),
        "num_hidden_layers": len(layers),
        "num_attention_heads": _attention_heads(model, "bert.encoder.layer.0.attention.self.query.bias"),
        "intermediate_size": int(state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "hidden_act": "gelu",  # the graph computes GELU with Erf: the exact form, not the tanh approximation
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": int(state["bert.embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(state["bert.embeddings.token_type_embeddings.weight"].shape[0]),
        "initializer_range": 0.02,
        "layer_norm_eps": _layer_norm_eps(model),
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "id2label": {str(index): f"LABEL_{index}" for index in range(num_labels)},
        "label2id": {f"LABEL_{index}": index for index in range(num_labels)},
    }


def convert(onnx_path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """Reads the int8 graph at ``onnx_path``: returns (float32 state dict, BertConfig dict, int8 state dict)."""
    model = load_graph(onnx_path)
    state = dequantized_state_dict(model)
    return state, bert_config(model, state), int8_state_dict(model)
