"""Single texts: the tokenizer's own single-sequence encoding, cut at the limit or refused, without padding."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from sie import InputTooLongError
from sie.tokenization.texts import TextTokenizer
from sie.testing.words import random_text


@pytest.mark.parametrize("checkpoint", ["random_bert_path", "random_xlm_roberta_path"])
def test_texts_encode_as_the_tokenizer_does_cut_at_the_limit(checkpoint, request, rng):
    path = request.getfixturevalue(checkpoint)
    reference = AutoTokenizer.from_pretrained(path)
    tokenizer = TextTokenizer(reference.backend_tokenizer)
    texts = [random_text(rng, int(words)) for words in (0, 1, 5, 30, 90)]
    encoded = tokenizer.encode_texts(texts, 40)
    expected = reference(texts, truncation=True, max_length=40)["input_ids"]
    assert encoded.lengths.tolist() == [len(ids) for ids in expected] and encoded.lengths.max() == 40
    assert encoded.input_ids.tolist() == [token for ids in expected for token in ids]
    assert not encoded.token_type_ids.any() and tokenizer.num_special_tokens == 2


def test_a_text_past_the_limit_is_refused_by_name_when_not_truncating(random_bert_path):
    tokenizer = TextTokenizer(AutoTokenizer.from_pretrained(random_bert_path).backend_tokenizer)
    with pytest.raises(InputTooLongError) as error:
        tokenizer.encode_texts(["short", "python " * 50], 20, truncate=False, field="inputs")
    assert error.value.field == "inputs[1]" and error.value.limit == 20
    assert tokenizer.encode_texts([], 20).num_pairs == 0
    np.testing.assert_array_equal(tokenizer.encode_texts(["a b"], 20, truncate=False).lengths, [4])
