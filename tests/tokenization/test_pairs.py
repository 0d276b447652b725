"""Pair tokenization against transformers' tokenizer on the same files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from sie import InputTooLongError
from sie.tokenization import PairTokenizer
from sie.testing.words import random_text


@pytest.fixture(scope="module", params=["default_model_path", "random_xlm_roberta_path"])
def tokenizers(request):
    hf = AutoTokenizer.from_pretrained(request.getfixturevalue(request.param))
    return hf, PairTokenizer(hf.backend_tokenizer)


def test_ids_match_transformers_only_second_truncation(tokenizers, rng):
    hf, ours = tokenizers
    queries = [random_text(rng, int(n)) for n in rng.integers(1, 8, size=20)]
    documents = [random_text(rng, int(n)) for n in rng.integers(0, 120, size=20)]
    encoded = ours.encode(queries, documents, max_length=64)
    expected = hf(queries, documents, truncation="only_second", max_length=64, return_token_type_ids=True)
    assert encoded.lengths.tolist() == [len(ids) for ids in expected["input_ids"]]
    assert encoded.input_ids.tolist() == [token for ids in expected["input_ids"] for token in ids]
    assert encoded.token_type_ids.tolist() == [t for types in expected["token_type_ids"] for t in types]
    assert encoded.lengths.max() == 64


def test_a_long_query_falls_back_to_longest_first_for_its_pairs_only(tokenizers):
    hf, ours = tokenizers
    long_query, short_query = "python " * 50, "what is python"
    document = "python is a language " * 20
    encoded = ours.encode([long_query, short_query], [document, document], max_length=32)
    expected = hf([long_query, short_query], [document, document], truncation="longest_first", max_length=32)
    only_second = hf([short_query], [document], truncation="only_second", max_length=32)
    assert encoded.lengths.tolist() == [32, 32]
    assert encoded.input_ids[:32].tolist() == expected["input_ids"][0]
    assert encoded.input_ids[32:].tolist() == only_second["input_ids"][0]


@pytest.mark.parametrize("max_length", [4, 5, 9, 32])
def test_a_query_that_fills_the_limit_is_cut_as_longest_first_cuts_it(tokenizers, max_length):
    hf, ours = tokenizers
    for query, document in (("python " * 50, "python is a language " * 20), ("a b c " * 30, "x " * 7)):
        encoded = ours.encode([query], [document], max_length=max_length)
        expected = hf([query], [document], truncation="longest_first", max_length=max_length,
                      return_token_type_ids=True)
        assert encoded.input_ids.tolist() == expected["input_ids"][0]
        assert encoded.token_type_ids.tolist() == expected["token_type_ids"][0]


@pytest.mark.parametrize("max_length", [5, 9])
def test_a_long_query_with_a_long_document_is_cut_in_little_memory(tokenizers, max_length, tmp_path):
    """Not by the tokenizers library's longest_first: its truncation also pairs every overflow window of the query
    with every one of the document, (query tokens / n1) x (document tokens / n2) encodings, which took gigabytes (or
    aborted the process on a failed allocation: a server worker) for texts of a few thousand words. Run in a child
    process allowed 1 GiB of address space past what its imports took."""
    hf, _ = tokenizers
    hf.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    script = (
        "import resource, sys\n"
        "from tokenizers import Tokenizer\n"
        "from sie.tokenization import PairTokenizer\n"
        "ours = PairTokenizer(Tokenizer.from_file(sys.argv[1]))\n"
        "size = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmSize'))\n"
        "resource.setrlimit(resource.RLIMIT_AS, ((size << 10) + (1 << 30),) * 2)\n"
        "print(ours.encode(['python ' * 3000], ['language ' * 3000], max_length=int(sys.argv[2])).lengths.tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "tokenizer.json"), str(max_length)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [f"[{max_length}]"]


def test_no_truncation_reports_the_first_pair_too_long(tokenizers):
    _, ours = tokenizers
    with pytest.raises(InputTooLongError) as error:
        ours.encode(["q"] * 3, ["short", "long " * 100, "long " * 100], max_length=64, truncate=False)
    assert error.value.field == "items[1]" and error.value.limit == 64 and error.value.length > 64
    assert ours.encode(["q"], ["short"], max_length=64, truncate=False).num_pairs == 1


def test_a_query_that_exactly_fills_the_limit_still_encodes(tokenizers):
    _, ours = tokenizers
    query = "what is python"
    query_tokens = len(ours.encode([query], [""], max_length=512).input_ids) - ours.num_special_tokens
    limit = query_tokens + ours.num_special_tokens
    encoded = ours.encode([query, query], ["a document that cannot fit at all", ""], max_length=limit)
    assert encoded.lengths.tolist() == [limit, limit]


def test_pairs_assembled_from_separate_tokenizations_equal_whole_pair_encodings(tokenizers, rng):
    """Each query tokenized once and each document once, then put in the tokenizer's own template, gives the
    tokenizer's pair encoding exactly: ids, token types and truncation, long queries included."""
    _, ours = tokenizers
    assert ours._template is not None, "the template was not read off this tokenizer's post-processor"
    queries = [random_text(rng, int(n)) for n in rng.integers(1, 40, size=6)]
    picks = rng.integers(0, len(queries), size=40)
    documents = [random_text(rng, int(n)) for n in rng.integers(0, 150, size=40)]
    for max_length in (24, 64, 512):
        assembled = ours.encode([queries[i] for i in picks], documents, max_length=max_length)
        whole = ours._encode_whole([(queries[i], d) for i, d in zip(picks, documents)], max_length, truncate=True)
        for field in ("input_ids", "token_type_ids", "lengths"):
            assert getattr(assembled, field).tolist() == getattr(whole, field).tolist(), (field, max_length)
