"""``TokenizerVariants``: a bounded set of configured tokenizer copies, since clients choose the limits."""

from __future__ import annotations

from transformers import AutoTokenizer

from sie.tokenization import PairTokenizer
from sie.tokenization.variants import TokenizerVariants


def test_only_the_most_recently_used_copies_are_kept_and_an_evicted_one_comes_back_the_same(random_bert_path):
    backend = AutoTokenizer.from_pretrained(random_bert_path).backend_tokenizer
    variants = TokenizerVariants(backend, capacity=4)
    text = "one two three four five six seven eight nine ten"
    uncut = variants.get(None)
    for max_length in range(3, 40):
        variants.get(None)  # the copy every request uses stays the most recent
        cut = variants.get((max_length, "longest_first"))
        assert len(cut.encode(text).ids) == min(max_length, len(uncut.encode(text).ids))
        assert len(variants) <= 4
    assert variants.get(None) is uncut, "the copy in use all along was never evicted"
    assert variants.get((39, "longest_first")) is cut
    assert len(variants.get((3, "longest_first")).encode(text).ids) == 3, "evicted, then made again alike"


def test_a_reranker_holds_a_bounded_number_of_copies_over_any_number_of_limits(random_bert_path):
    pairs = PairTokenizer(AutoTokenizer.from_pretrained(random_bert_path).backend_tokenizer)
    query = "a query much longer than any of the limits below " * 50  # cut with its document: longest_first
    for max_length in range(8, 200):
        assert pairs.encode([query], ["a document"], max_length).lengths.tolist() == [max_length]
    assert len(pairs._variants) <= 8
