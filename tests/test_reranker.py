"""The public API on the converted default model: the guide's examples and the behaviours users rely on."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import sie
from sie import BackendError, InputTooLongError, InvalidInputError, Reranker
from sie.testing.words import random_text

GUIDE_DOCUMENTS = ["Python is a programming language.", "Snakes are reptiles.", "Python was created by Guido van Rossum."]


@pytest.fixture(scope="module")
def reranker(default_model_path) -> sie.Reranker:
    return sie.load(device="cpu")


def test_guide_example_ranks_the_snake_sentence_last(reranker):
    results = sie.rerank("What is Python?", GUIDE_DOCUMENTS)
    assert [result["index"] for result in results][-1] == 1
    assert [result["rank"] for result in results] == [0, 1, 2]
    assert all(0.0 < result["score"] < 1.0 for result in results)
    assert sie.load() is sie.load(), "sie.load must cache the Reranker"


def test_guide_id_example_returns_ids_in_item_id(reranker):
    query = {"id": "q1", "text": "What is Python?"}
    items = [{"id": f"doc-{i + 1}", "text": text} for i, text in enumerate(GUIDE_DOCUMENTS)]
    result = sie.score(None, query, items)
    assert result["model"] == sie.DEFAULT_MODEL
    assert result["query_id"] == "q1"
    assert [entry["item_id"] for entry in result["scores"]][-1] == "doc-2"
    assert sorted(entry["item_id"] for entry in result["scores"]) == ["doc-1", "doc-2", "doc-3"]
    assert [entry["rank"] for entry in result["scores"]] == [0, 1, 2]
    scores = [entry["score"] for entry in result["scores"]]
    assert scores == sorted(scores, reverse=True)
    assert result["usage"]["input_tokens"] == reranker.encode("What is Python?", GUIDE_DOCUMENTS).num_tokens


def test_items_without_ids_get_their_position(reranker):
    result = reranker.score("What is Python?", [{"text": text} for text in GUIDE_DOCUMENTS])
    assert sorted(entry["item_id"] for entry in result["scores"]) == ["item-0", "item-1", "item-2"]
    assert result["query_id"] is None


def test_results_follow_the_documents_in_any_input_order(reranker, rng):
    order = rng.permutation(len(GUIDE_DOCUMENTS))
    shuffled = [GUIDE_DOCUMENTS[i] for i in order]
    baseline = {GUIDE_DOCUMENTS[r["index"]]: r["score"] for r in reranker.rerank("What is Python?", GUIDE_DOCUMENTS)}
    for result in reranker.rerank("What is Python?", shuffled, return_documents=True):
        assert result["text"] == shuffled[result["index"]]
        assert result["score"] == pytest.approx(baseline[result["text"]], abs=1e-6)


def test_duplicates_empty_strings_and_unicode(reranker):
    documents = ["Python is a programming language.", "", "Python is a programming language.", "Pythön ist eine Sprache 🐍 東京"]
    results = reranker.rerank("What is Python?", documents)
    by_index = {result["index"]: result["score"] for result in results}
    assert sorted(by_index) == [0, 1, 2, 3]
    assert by_index[0] == pytest.approx(by_index[2], abs=1e-6)
    assert all(np.isfinite(score) for score in by_index.values())


def test_empty_documents_give_an_empty_list(reranker):
    assert reranker.rerank("What is Python?", []) == []
    assert reranker.score("What is Python?", [])["scores"] == []
    assert reranker.predict([]).shape == (0,)


@pytest.mark.parametrize(
    ("documents", "field"),
    [
        (["fine", 3], "documents[1]"),
        (["fine", {"id": "x"}], "documents[1].text"),
        (["fine", {"text": 7}], "documents[1].text"),
        ([{"id": 5, "text": "fine"}], "documents[0].id"),
        # Lone surrogates (an emoji cut in half): no UTF-8 text, which the tokenizer refused with a bare TypeError.
        (["fine", "cut emoji \ud83d"], "documents[1]"),
        (["fine", {"text": "cut \udc00 emoji"}], "documents[1].text"),
    ],
)
def test_bad_documents_raise_value_error_naming_the_item(reranker, documents, field):
    with pytest.raises(ValueError, match="^" + re.escape(field) + ":") as error:
        reranker.rerank("What is Python?", documents)
    assert error.value.field == field


def test_text_that_is_not_utf8_is_named_wherever_it_comes_in(reranker):
    cases = [(lambda: reranker.rerank("cut \ud83d", ["fine"]), "query"),
             (lambda: reranker.predict([("q", "fine"), ("q", "cut \udcff")]), "pairs[1]"),
             (lambda: reranker.predict([("q", "fine"), ("x \ud800", "fine")]), "pairs[1]"),
             (lambda: reranker.encode(["q", "r"], ["fine", "cut \ud83d"]), "items[1]"),
             (lambda: reranker.encode(["q", "r \ud83d"], ["fine", "fine"]), "items[1].query"),
             (lambda: reranker.rerank("q", ["fine"], instruction="cut \ud83d"), "instruction")]
    for call, field in cases:
        with pytest.raises(InvalidInputError, match="is not valid UTF-8 text") as error:
            call()
        assert error.value.field == field


def test_raw_scores_are_the_logits_of_the_sigmoid_scores(reranker):
    scores = {r["index"]: r["score"] for r in reranker.rerank("What is Python?", GUIDE_DOCUMENTS)}
    logits = {r["index"]: r["score"] for r in reranker.rerank("What is Python?", GUIDE_DOCUMENTS, raw_scores=True)}
    for index, logit in logits.items():
        assert scores[index] == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-9)
    assert max(logits.values()) > 1.0, "logits of a relevant pair should exceed 1"


def test_top_k_and_instruction(reranker):
    assert len(reranker.rerank("What is Python?", GUIDE_DOCUMENTS, top_k=2)) == 2
    plain = reranker.rerank("Python?", GUIDE_DOCUMENTS, raw_scores=True)
    with_instruction = reranker.rerank("Python?", GUIDE_DOCUMENTS, raw_scores=True, instruction="What is")
    direct = reranker.rerank("What is Python?", GUIDE_DOCUMENTS, raw_scores=True)
    assert [r["score"] for r in with_instruction] == pytest.approx([r["score"] for r in direct], abs=1e-6)
    assert [r["score"] for r in with_instruction] != pytest.approx([r["score"] for r in plain], abs=1e-3)


def test_predict_and_rank_follow_sentence_transformers(reranker):
    pairs = [("What is Python?", text) for text in GUIDE_DOCUMENTS]
    scores = reranker.predict(pairs, batch_size=2)
    assert scores.shape == (3,) and scores.dtype == np.float32
    # The same micro-batches: packing other pairs together may move fp32 logits by an ulp or so.
    logits = reranker.predict(pairs, batch_size=2, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    ranked = reranker.rank("What is Python?", GUIDE_DOCUMENTS, top_k=2, return_documents=True)
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-scores)[:2])
    assert ranked[0]["text"] == GUIDE_DOCUMENTS[ranked[0]["corpus_id"]]


def test_predict_and_rank_take_sentence_transformers_keywords_and_return_its_types(reranker):
    pair = ("What is Python?", GUIDE_DOCUMENTS[0])
    alone = reranker.predict(pair)
    assert isinstance(alone, np.float32) and float(alone) == reranker.predict([pair])[0], "one pair, one score"
    assert reranker.predict(pair, convert_to_tensor=True).shape == ()
    as_list = reranker.predict([pair, pair], convert_to_numpy=False)
    assert isinstance(as_list, list) and all(isinstance(score, torch.Tensor) for score in as_list)
    np.testing.assert_array_equal(reranker.predict([pair], apply_softmax=True), reranker.predict([pair]))
    logits = reranker.rank("What is Python?", GUIDE_DOCUMENTS, activation_fn=torch.nn.Identity())
    assert max(r["score"] for r in logits) > 1.0
    assert reranker.rank("What is Python?", np.array(GUIDE_DOCUMENTS), top_k=0) == []
    with pytest.raises(InvalidInputError, match="^documents\\[1\\]: must be a string"):
        reranker.rank("What is Python?", ["fine", None])


def test_rerank_takes_top_k_zero_and_numpy_arrays_naming_its_own_arguments(reranker):
    assert reranker.rerank("What is Python?", np.array(GUIDE_DOCUMENTS), top_k=0) == []
    assert len(sie.rerank("What is Python?", np.array(GUIDE_DOCUMENTS), top_k=2)) == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidInputError, match="^top_k: must be a non-negative integer"):
            reranker.rerank("What is Python?", GUIDE_DOCUMENTS, top_k=bad)
    with pytest.raises(InvalidInputError, match="^max_length: must be a positive integer"):
        reranker.rerank("What is Python?", GUIDE_DOCUMENTS, max_length=0)


def test_bad_batch_size_top_k_and_max_length_are_refused_naming_them_and_numpy_integers_are_taken(reranker):
    pairs = [("What is Python?", document) for document in GUIDE_DOCUMENTS]
    for bad in (0, -1, 2.5, "2", True):
        with pytest.raises(InvalidInputError, match="^batch_size: must be a positive integer"):
            reranker.predict(pairs, batch_size=bad)
        with pytest.raises(InvalidInputError, match="^batch_size: must be a positive integer"):
            reranker.rank("What is Python?", GUIDE_DOCUMENTS, batch_size=bad)
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(InvalidInputError, match="^top_k: must be a non-negative integer"):
            reranker.rank("What is Python?", GUIDE_DOCUMENTS, top_k=bad)
    with pytest.raises(InvalidInputError, match="^pairs: must be a list of \\(query, document\\) pairs"):
        reranker.predict(pair for pair in pairs)
    pandas = pytest.importorskip("pandas")  # comes with ray[data], in the dev extras
    with pytest.raises(InvalidInputError, match="got a DataFrame"):  # its iteration gives its column names
        reranker.predict(pandas.DataFrame({"query": ["What is Python?"], "document": ["a language"]}))
    with pytest.raises(InvalidInputError) as error:
        reranker.rerank("What is Python?", GUIDE_DOCUMENTS, max_length=3)
    assert error.value.field == "max_length", "rerank's own keyword, not the score API's options.max_length"
    # numpy integers are integers (as rank and sentence-transformers take them)
    best = reranker.rerank("What is Python?", GUIDE_DOCUMENTS, top_k=np.int64(2), max_length=np.int64(64))
    assert [r["index"] for r in best] == [r["index"] for r in reranker.rerank("What is Python?", GUIDE_DOCUMENTS)][:2]
    assert len(reranker.score("What is Python?", GUIDE_DOCUMENTS, options={"top_k": np.int64(1)})["scores"]) == 1
    # Batches of one pack other shapes than one batch of all: the matmuls may round differently (2e-9 seen).
    np.testing.assert_allclose(reranker.predict(pairs, batch_size=np.int64(1)), reranker.predict(pairs),
                               rtol=1e-5, atol=1e-6)
    assert reranker.encode("What is Python?", GUIDE_DOCUMENTS, max_length=np.int64(8)).lengths.max() == 8


def test_truncation_options(reranker):
    long_document = "python " * 600
    result = reranker.score("What is Python?", [long_document], options={"max_length": 16})
    assert result["usage"]["input_tokens"] == 16
    with pytest.raises(InputTooLongError) as error:
        reranker.score("What is Python?", ["short", long_document], options={"truncate": False})
    assert error.value.field == "items[1]" and error.value.limit == 512
    # A query too long with any document is the query's fault, not the first document's.
    long_query = "python " * 600
    with pytest.raises(InputTooLongError) as error:
        reranker.score(long_query, ["short"], options={"truncate": False})
    assert error.value.field == "query" and error.value.length > 512
    with pytest.raises(InputTooLongError) as error:
        reranker.encode(["what", long_query], ["a", "b"], truncate=False)
    assert error.value.field == "items[1].query"
    # ... and an instruction that makes a query too long is the instruction's.
    with pytest.raises(InputTooLongError) as error:
        reranker.score("What is Python?", ["short"], instruction="python " * 600, options={"truncate": False})
    assert error.value.field == "instruction" and error.value.length > 512
    with pytest.raises(InputTooLongError) as error:
        reranker.score(long_query, ["short"], instruction="find it", options={"truncate": False})
    assert error.value.field == "query"
    with pytest.raises(InvalidInputError, match="options.max_length"):
        reranker.score("What is Python?", ["short"], options={"max_length": 4096})
    with pytest.raises(InvalidInputError, match="unknown option"):
        reranker.score("What is Python?", ["short"], options={"temperature": 1})


def test_a_query_longer_than_the_limit_is_cut_with_its_document(reranker):
    long_query = "python " * 40
    encoded = reranker.encode(long_query, ["a short document", "another"], max_length=16)
    assert encoded.lengths.tolist() == [16, 16]
    results = reranker.rerank(long_query, ["a short document", "another"], max_length=16)
    assert len(results) == 2 and all(np.isfinite(result["score"]) for result in results)


@pytest.mark.parametrize(("arguments", "field"), [
    ({"dtype": "float8"}, "dtype"), ({"dtype": torch.int32}, "dtype"), ({"dtype": 16}, "dtype"),
    ({"device": "meta"}, "device"), ({"device": "mps"}, "device"), ({"device": "gpu"}, "device"),
    ({"max_batch_tokens": 0}, "max_batch_tokens"), ({"max_batch_tokens": -5}, "max_batch_tokens"),
    ({"max_batch_tokens": 1.5}, "max_batch_tokens"), ({"backend": "cudnn"}, None),
])
def test_an_argument_sie_cannot_run_is_refused_naming_it(random_xlm_roberta_path, arguments, field, monkeypatch):
    if field:  # refused before the weights load (sie score-file loaded them, then refused a budget of 0)
        monkeypatch.setattr(sie.reranker, "build_model", lambda *args: pytest.fail("the weights loaded first"))
    with pytest.raises(InvalidInputError if field else BackendError, match=f"^{field}: " if field else "cudnn"):
        sie.Reranker(str(random_xlm_roberta_path), **{"device": "cpu", **arguments})


def test_a_dtype_or_backend_by_name_is_the_same_engine(random_xlm_roberta_path):
    """dtype as the command line and the server spell it, backend in any case (as SIE_BACKEND is read)."""
    pairs = [("what is python", "python is a language"), ("snakes", "a python is a snake")]
    by_dtype = sie.Reranker(str(random_xlm_roberta_path), device="cpu", dtype=torch.float32, backend="torch")
    by_name = sie.Reranker(str(random_xlm_roberta_path), device="cpu", dtype=" float32", backend=" Torch")
    assert by_name.dtype == torch.float32 and by_name.backends == by_dtype.backends
    np.testing.assert_array_equal(by_name.predict(pairs), by_dtype.predict(pairs))
    assert sie.Reranker(str(random_xlm_roberta_path), device="cpu", dtype="torch.bfloat16").dtype == torch.bfloat16
    budget = sie.Reranker(str(random_xlm_roberta_path), device="cpu", max_batch_tokens=np.int64(64)).max_batch_tokens
    assert budget == 64 and type(budget) is int


def test_max_length_must_leave_room_for_a_document_token(random_xlm_roberta_path):
    xlm_roberta = sie.Reranker(str(random_xlm_roberta_path), device="cpu", dtype=torch.float32)
    shortest = xlm_roberta.tokenizer.num_special_tokens + 1  # <s> A </s></s> B </s>: four specials
    with pytest.raises(InvalidInputError, match=f"from {shortest} to"):
        xlm_roberta.score("what is python", ["python " * 200], options={"max_length": shortest - 1})
    result = xlm_roberta.score("what is python", ["python " * 200], options={"max_length": shortest})
    assert result["usage"]["input_tokens"] == shortest


@pytest.mark.parametrize(("key", "declared"), [
    ("sentence_transformers", "torch.nn.modules.linear.Identity"),  # what the ms-marco cross-encoders name
    ("sbert_ce_default_activation_function", "torch.nn.modules.activation.Softsign"),  # the older key
    (None, None),  # none named: the sigmoid
    ("sentence_transformers", "my_package.Scaled"),  # not torch's: not imported, the sigmoid
    # Where sentence-transformers 6 saves a CrossEncoder's activation; it wins over config.json's (Softsign here).
    ("config_sentence_transformers.json", "torch.nn.modules.linear.Identity"),
])
def test_predict_and_rank_apply_the_activation_the_checkpoint_names(random_bert_path, tmp_path, rng, key, declared):
    """As sentence-transformers' CrossEncoder reads it; rerank and the score API keep their sigmoid scores."""
    import shutil

    from sentence_transformers import CrossEncoder
    from sentence_transformers.util import import_from_string

    folder = tmp_path / "model"
    if key == "config_sentence_transformers.json":  # saved by sentence-transformers itself, modules.json and all
        CrossEncoder(str(random_bert_path), activation_fn=import_from_string(declared)()).save(str(folder))
        assert json.loads((folder / key).read_text())["activation_fn"] == declared
    else:
        shutil.copytree(random_bert_path, folder)
    config = json.loads((folder / "config.json").read_text())
    if key == "sentence_transformers":
        config[key] = {"activation_fn": declared}
    elif key == "config_sentence_transformers.json":
        config["sbert_ce_default_activation_function"] = "torch.nn.modules.activation.Softsign"
    elif key is not None:
        config[key] = declared
    (folder / "config.json").write_text(json.dumps(config))
    pairs = [(random_text(rng, 4), random_text(rng, int(words))) for words in (3, 12, 40)]
    ours = Reranker(str(folder), device="cpu", dtype=torch.float32)
    expected = CrossEncoder(str(folder), device="cpu").predict(pairs)
    # This random tokenizer's model_input_names lack token types: both feed the model 0s.
    np.testing.assert_allclose(ours.predict(pairs), expected, rtol=0, atol=1e-6)
    logits = ours.predict(pairs, activation_fn=torch.nn.Identity())
    by_name = {"torch.nn.modules.linear.Identity": logits,
               "torch.nn.modules.activation.Softsign": logits / (1 + np.abs(logits))}
    np.testing.assert_allclose(ours.predict(pairs), by_name.get(declared, 1 / (1 + np.exp(-logits))), rtol=0,
                               atol=1e-6)
    assert [result["score"] for result in ours.rank(pairs[0][0], [pairs[0][1]])] == [pytest.approx(
        float(ours.predict(pairs[:1])[0]), abs=1e-6)]
    assert ours.rerank(pairs[0][0], [pairs[0][1]])[0]["score"] == pytest.approx(1 / (1 + np.exp(-logits[0])),
                                                                                abs=1e-6)


def test_one_query_is_checked_once_for_all_its_documents(reranker, monkeypatch):
    """Checking the query again with each document made a long query with many documents cost their product: a
    2 MB query and 1,000 documents spent 40 s scanning the same text, with the GIL held (every request thread of a
    server worker stalled behind it)."""
    checked = []
    monkeypatch.setattr(sie.reranker, "check_utf8", lambda text, field: checked.append(field))
    reranker.encode("What is Python?", ["a", "b", "c"])
    assert checked == ["query", "items[0]", "items[1]", "items[2]"]
    checked.clear()
    reranker.encode(["q", "r", "q"], ["a", "b", "c"])
    assert checked == ["items[0].query", "items[0]", "items[1].query", "items[1]", "items[2]"]
