"""The encode request's parameters and items, and the output dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from sie import InvalidInputError
from sie.encoding.params import EncodeParams, parse_encode_params, parse_items, quantize


def test_defaults_and_a_full_request():
    assert parse_encode_params(None) == EncodeParams()
    parsed = parse_encode_params({"output_types": ["sparse", "dense", "sparse"], "instruction": "Find: ",
                                  "output_dtype": "int8",
                                  "options": {"is_query": True, "max_length": 64, "truncate": False,
                                              "normalize": False}})
    assert parsed == EncodeParams(output_types=("sparse", "dense"), instruction="Find: ", output_dtype="int8",
                                  is_query=True, max_length=64, truncate=False, normalize=False)


@pytest.mark.parametrize(("params", "field"), [
    ({"output_types": ["dense", "colbert"]}, "params.output_types[1]"),
    ({"output_types": []}, "params.output_types"),
    ({"output_types": "dense"}, "params.output_types"),
    ({"output_dtype": "bfloat16"}, "params.output_dtype"),
    ({"instruction": 3}, "params.instruction"),
    ({"options": {"is_query": "yes"}}, "params.options.is_query"),
    ({"options": {"max_length": 0}}, "params.options.max_length"),
    ({"options": {"profile": "fast"}}, "params.options.profile"),
    ({"options": {"beam": 2}}, "params.options"),
    ({"options": []}, "params.options"),
    ({"dimensions": 3}, "params"),
])
def test_bad_parameters_name_their_field(params, field):
    with pytest.raises(InvalidInputError) as error:
        parse_encode_params(params)
    assert error.value.field == field


@pytest.mark.parametrize(("items", "field"), [
    ([], "items"),
    ("text", "items"),
    ([{"text": "a"}, {"text": 7}], "items[1].text"),
    ([{"id": 3, "text": "a"}], "items[0].id"),
    ([{"images": ["x.jpg"]}], "items[0].text"),
])
def test_bad_items_name_their_field(items, field):
    with pytest.raises(InvalidInputError) as error:
        parse_items(items)
    assert error.value.field == field


def test_items_keep_the_ids_they_were_given_and_none_otherwise():
    parsed = parse_items(["plain", {"id": "d1", "text": "with id"}, {"text": "no id", "metadata": {"k": 1}}])
    assert parsed.texts == ["plain", "with id", "no id"] and parsed.ids == [None, "d1", None]


def test_output_dtypes(rng):
    values = rng.standard_normal((5, 20)).astype(np.float32)
    assert quantize(values, "float32").dtype == np.float32
    np.testing.assert_array_equal(quantize(values, "float16"), values.astype(np.float16))

    int8 = quantize(values, "int8")
    assert int8.dtype == np.int8 and (np.abs(int8).max(axis=1) == 127).all()
    cosine = (int8 * values).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(values, axis=1)
    assert cosine.min() > 0.999
    np.testing.assert_array_equal(quantize(values, "uint8"), (int8.astype(np.int16) + 128).astype(np.uint8))

    ubinary = quantize(values, "ubinary")
    assert ubinary.dtype == np.uint8 and ubinary.shape == (5, 3)
    np.testing.assert_array_equal(np.unpackbits(ubinary, axis=1)[:, :20], (values > 0).astype(np.uint8))
    np.testing.assert_array_equal(quantize(values, "binary"), (ubinary.astype(np.int16) - 128).astype(np.int8))
    # One vector alone quantizes as it does among others: nothing depends on the batch.
    np.testing.assert_array_equal(quantize(values[2], "int8"), int8[2])
    assert quantize(np.zeros(4, np.float32), "int8").tolist() == [0, 0, 0, 0]
