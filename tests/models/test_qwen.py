"""Decoder rerankers (Qwen2 and Qwen3, causal LM and one-label classifier) on the packed engine: token ids equal
the reference recipes', scores equal transformers' on a left-padded batch, packing invariance, no
vocabulary-sized tensor, the instruction slot, and how a recipe is found."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from sie import InputTooLongError, Reranker, UnsupportedModelError
from sie.recipes import MXBAI_RERANK_V2, QWEN3_RERANKER, RECIPE_FILE, resolve_recipe
from sie.testing import make_random_checkpoint, random_pairs, random_text
from sie.testing.decoders import (
    QWEN3_SUFFIX,
    left_padded_logits,
    mxbai_rerank_v2_ids,
    mxbai_template_length,
    qwen3_reranker_ids,
)
from tests.models.test_bert import ShapeRecorder

# Document lengths in words: empty, one word, short, medium, and past every budget used below.
DOCUMENT_WORDS = (0, 1, 3, 11, 40, 90, 300)
MAX_LENGTH = 320  # tokens: small enough that long documents are cut (mxbai's template alone is ~220 here), and fast
# (arch, classifier, recipe) of the four checkpoints.
CHECKPOINTS = {
    "qwen3-lm": ("qwen3", False, "qwen3-reranker"),
    "qwen3-classifier": ("qwen3", True, "qwen3-reranker"),
    "qwen2-lm": ("qwen2", False, "mxbai-rerank-v2"),
    "qwen2-classifier": ("qwen2", True, "mxbai-rerank-v2"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    return {name: make_random_checkpoint(root / name, arch, shape="tiny-gqa", classifier=classifier,
                                         tie_word_embeddings=name != "qwen2-lm", seed=index)
            for index, (name, (arch, classifier, _)) in enumerate(CHECKPOINTS.items())}


def reference_ids(tokenizer, recipe: str, pairs, instruction: str | None, max_length: int) -> list[list[int]]:
    if recipe == "qwen3-reranker":
        return [qwen3_reranker_ids(tokenizer, q, d, instruction, max_length) for q, d in pairs]
    budget = max_length - mxbai_template_length(tokenizer)  # sie's max_length counts every token; mxbai's does not
    return [mxbai_rerank_v2_ids(tokenizer, q, d, instruction, budget) for q, d in pairs]


@pytest.mark.parametrize("recipe", ["qwen3-reranker", "mxbai-rerank-v2"])
# "": Qwen3-Reranker's reference keeps an empty instruction, mxbai-rerank-v2's drops it (``if instruction``).
@pytest.mark.parametrize("instruction", [None, "", "Find the passage that answers the question"])
def test_token_ids_equal_the_reference_recipe(checkpoints, recipe, instruction, seed):
    path = checkpoints["qwen3-lm" if recipe == "qwen3-reranker" else "qwen2-lm"]
    reranker = Reranker(str(path), device="cpu", recipe=recipe, max_length=MAX_LENGTH)
    pairs = random_pairs(seed, DOCUMENT_WORDS)
    queries, documents = (list(texts) for texts in zip(*pairs, strict=True))
    encoded = reranker.encode(queries, documents, instruction=instruction)
    expected = reference_ids(AutoTokenizer.from_pretrained(path), recipe, pairs, instruction, MAX_LENGTH)
    ours = np.split(encoded.input_ids, np.cumsum(encoded.lengths)[:-1])
    assert [ids.tolist() for ids in ours] == expected
    assert encoded.lengths.max() == MAX_LENGTH, "no pair reached truncation"
    assert not encoded.token_type_ids.any()


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_logits_match_transformers_left_padded(checkpoints, name, seed):
    path = checkpoints[name]
    _, classifier, recipe = CHECKPOINTS[name]
    reranker = Reranker(str(path), device="cpu", dtype=torch.float32, recipe=recipe, max_length=MAX_LENGTH,
                        max_batch_tokens=700)
    rng = np.random.default_rng(seed)
    pairs = random_pairs(seed, DOCUMENT_WORDS)
    instruction = random_text(rng, 5)
    queries, documents = (list(texts) for texts in zip(*pairs, strict=True))
    encoded = reranker.encode(queries, documents, instruction=instruction)
    ours = reranker.logits(encoded)

    tokenizer = AutoTokenizer.from_pretrained(path)
    model_class = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    model = model_class.from_pretrained(path, dtype=torch.float32).eval()
    sequences = reference_ids(tokenizer, recipe, pairs, instruction, MAX_LENGTH)
    score_ids = None if classifier else reranker.tokenizer.score_token_ids
    expected = left_padded_logits(model, sequences, tokenizer.pad_token_id, score_ids, batch_size=len(pairs))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


def test_a_pair_scores_the_same_alone_batched_and_reordered(checkpoints, rng):
    reranker = Reranker(str(checkpoints["qwen3-lm"]), device="cpu", dtype=torch.float32, max_length=MAX_LENGTH,
                        recipe="qwen3-reranker", max_batch_tokens=400)
    pairs = [(random_text(rng, 4), random_text(rng, int(words))) for words in rng.integers(0, 60, size=10)]
    identity = torch.nn.Identity()
    together = reranker.predict(pairs, activation_fn=identity)
    alone = np.array([reranker.predict([pair], activation_fn=identity)[0] for pair in pairs])
    order = rng.permutation(len(pairs))
    reordered = reranker.predict([pairs[i] for i in order], activation_fn=identity)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    np.testing.assert_allclose(reordered, together[order], rtol=0, atol=1e-5)


def test_no_vocabulary_sized_tensor_and_last_rows_only(checkpoints, rng):
    reranker = Reranker(str(checkpoints["qwen2-lm"]), device="cpu", dtype=torch.float32, recipe="mxbai-rerank-v2",
                        max_length=MAX_LENGTH)
    vocab = reranker.model.model.embed_tokens.num_embeddings
    model_dims = {size for parameter in reranker.model.parameters() for size in parameter.shape}
    assert vocab not in model_dims - {vocab} and reranker.model.score.weight.shape[0] == 2
    encoded = reranker.encode("what is python", [random_text(rng, int(n)) for n in (2, 30, 7)])
    with ShapeRecorder() as recorder:
        reranker.logits(encoded)
    assert not [shape for _, shape in recorder.shapes if vocab in shape], "a vocabulary-sized tensor was built"
    intermediate = reranker.model.model.layers[0].mlp.down_proj.in_features
    mlp_rows = [shape[0] for op, shape in recorder.shapes if "linear" in op and shape[-1] == 2 * intermediate]
    assert mlp_rows[-1] == encoded.num_pairs, "the last layer's MLP ran on more than the last rows"
    assert mlp_rows[0] == encoded.num_tokens


def test_the_instruction_fills_the_recipe_slot(checkpoints):
    reranker = Reranker(str(checkpoints["qwen3-lm"]), device="cpu", recipe="qwen3-reranker")
    documents = ["python is a programming language", "snakes are reptiles"]
    default = reranker.score("what is python", documents, options={"raw_scores": True})
    explicit = reranker.score("what is python", documents, instruction=QWEN3_RERANKER.default_instruction,
                              options={"raw_scores": True})
    other = reranker.score("what is python", documents, instruction="Find documents about snakes",
                           options={"raw_scores": True})
    assert [s["score"] for s in explicit["scores"]] == [s["score"] for s in default["scores"]]
    assert [s["score"] for s in other["scores"]] != pytest.approx([s["score"] for s in default["scores"]], abs=1e-4)
    ranked = reranker.rerank("what is python", documents, instruction="Find documents about snakes", raw_scores=True)
    assert {f"item-{r['index']}": r["score"] for r in ranked} == {s["item_id"]: s["score"] for s in other["scores"]}


def test_truncation_cuts_the_document_never_the_template_end(checkpoints):
    reranker = Reranker(str(checkpoints["qwen3-lm"]), device="cpu", recipe="qwen3-reranker", max_length=MAX_LENGTH)
    long = "python " * 500
    encoded = reranker.encode("what is python", [long])
    suffix = AutoTokenizer.from_pretrained(checkpoints["qwen3-lm"]).encode(QWEN3_SUFFIX, add_special_tokens=False)
    assert encoded.num_tokens == MAX_LENGTH and encoded.input_ids[-len(suffix):].tolist() == suffix
    with pytest.raises(InputTooLongError) as error:
        reranker.score("what is python", ["short", long], options={"truncate": False})
    assert error.value.field == "items[1]" and error.value.limit == MAX_LENGTH
    with pytest.raises(InputTooLongError) as error:
        reranker.score(long, ["short"], options={"truncate": False})
    assert error.value.field == "query"


def test_a_causal_lm_without_a_recipe_is_refused_saying_how_to_give_one(checkpoints, random_bert_path):
    with pytest.raises(UnsupportedModelError, match="recipe=NAME.*`--recipe NAME` to sie rerank or sie score-file.*"
                                                    "sie serve --recipe .*sie_reranker.json"):
        Reranker(str(checkpoints["qwen3-lm"]), device="cpu")
    with pytest.raises(UnsupportedModelError, match="neither a built-in"):
        Reranker(str(checkpoints["qwen3-lm"]), device="cpu", recipe="nope")
    with pytest.raises(UnsupportedModelError, match="decoder rerankers only"):
        Reranker(str(random_bert_path), device="cpu", recipe="qwen3-reranker")


def test_recipes_come_from_the_folder_file_or_the_hub_id(checkpoints, tmp_path):
    assert resolve_recipe("Qwen/Qwen3-Reranker-4B", tmp_path, None) is QWEN3_RERANKER
    assert resolve_recipe("mixedbread-ai/mxbai-rerank-large-v2", tmp_path, None) is MXBAI_RERANK_V2
    assert resolve_recipe("mixedbread-ai/mxbai-rerank-large-v1", tmp_path, None) is None
    (tmp_path / RECIPE_FILE).write_text(json.dumps({"base": "qwen3-reranker", "default_instruction": "Judge it"}))
    recipe = resolve_recipe("my/fine-tune", tmp_path, None)
    assert recipe.default_instruction == "Judge it" and recipe.prefix == QWEN3_RERANKER.prefix
    (tmp_path / RECIPE_FILE).write_text(json.dumps({"base": "qwen3-reranker", "temperature": 1}))
    with pytest.raises(UnsupportedModelError, match="unknown recipe field.*temperature"):
        resolve_recipe("my/fine-tune", tmp_path, None)


@pytest.mark.parametrize(("fields", "words"), [
    ({"base": ["qwen3-reranker"]}, "base"),
    ({"query_share": "0.5"}, "query_share must be a number"),
    ({"prefix": [1, 2]}, "prefix must be a string or a list of strings"),
    ({"score_tokens": "ny"}, "score_tokens must be"),
    ({"joint": "false"}, "joint must be true or false"),
    ({"max_length": True}, "max_length must be a positive integer"),
    ({"query_template": "{query} in {lang}"}, "a template does not format"),
    ({"document_template": "Doc {document} {"}, "a template does not format"),
])
def test_a_recipe_field_of_the_wrong_kind_is_refused_when_read_naming_it(tmp_path, fields, words):
    path = tmp_path / RECIPE_FILE
    path.write_text(json.dumps({"base": "qwen3-reranker", **fields}))
    with pytest.raises(UnsupportedModelError, match=re.escape(words)):
        resolve_recipe("my/fine-tune", tmp_path, None)


def test_recipes_are_found_from_a_bom_file_a_home_path_or_a_hub_id_with_a_slash(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "r.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"base": "mxbai-rerank-v2"}).encode())
    assert resolve_recipe("my/model", tmp_path / "model", "~/r.json").prefix == MXBAI_RERANK_V2.prefix
    assert resolve_recipe("Qwen/Qwen3-Reranker-0.6B/", tmp_path / "model", None) is QWEN3_RERANKER


def test_a_recipe_file_in_the_model_folder_is_used(checkpoints, tmp_path):
    import shutil

    folder = Path(shutil.copytree(checkpoints["qwen3-lm"], tmp_path / "fine-tune"))
    (folder / RECIPE_FILE).write_text(json.dumps({"base": "qwen3-reranker", "default_instruction": "Judge it"}))
    reranker = Reranker(str(folder), device="cpu")
    assert reranker.recipe.default_instruction == "Judge it"
    baseline = Reranker(str(checkpoints["qwen3-lm"]), device="cpu", recipe="qwen3-reranker")
    np.testing.assert_allclose(reranker.predict([("q", "d")]), baseline.score(
        "q", ["d"], instruction="Judge it")["scores"][0]["score"], rtol=1e-6)


def test_mxbai_refuses_without_truncation_a_query_its_reference_would_cut(checkpoints, rng):
    # mxbai-rerank-v2's reference caps the query part at 3/4 of the budget even where the pair fits: with
    # truncation off, sie refuses such a query rather than score other tokens than the reference would.
    path = checkpoints["qwen2-lm"]
    reranker = Reranker(str(path), device="cpu", recipe="mxbai-rerank-v2", max_length=MAX_LENGTH)
    tokenizer = AutoTokenizer.from_pretrained(path)
    cap = (MAX_LENGTH - mxbai_template_length(tokenizer)) * 3 // 4
    def part_tokens(text: str) -> int:
        return len(tokenizer(MXBAI_RERANK_V2.query_text(text, None), add_special_tokens=False)["input_ids"])

    query = random_text(rng, 200)
    while part_tokens(query) > cap + 8:
        query = query.rsplit(" ", 1)[0]  # past the cap by a little: the whole pair still fits the budget
    assert part_tokens(query) > cap
    documents = ["python", "snakes are reptiles"]
    with pytest.raises(InputTooLongError) as refused:
        reranker.encode(query, documents, truncate=False)
    assert refused.value.field == "query" and refused.value.limit == cap
    cut = reranker.encode(query, documents)
    expected = reference_ids(tokenizer, "mxbai-rerank-v2", [(query, d) for d in documents], None, MAX_LENGTH)
    assert [ids.tolist() for ids in np.split(cut.input_ids, np.cumsum(cut.lengths)[:-1])] == expected
    short = query
    while part_tokens(short) > cap:
        short = short.rsplit(" ", 1)[0]
    kept = reranker.encode(short, documents, truncate=False)
    expected = reference_ids(tokenizer, "mxbai-rerank-v2", [(short, d) for d in documents], None, MAX_LENGTH)
    assert [ids.tolist() for ids in np.split(kept.input_ids, np.cumsum(kept.lengths)[:-1])] == expected


def test_a_recipe_budget_that_leaves_a_pair_no_room_is_refused_when_loaded(checkpoints, tmp_path):
    # Qwen3's max_length counts the template: a budget below it would cut the pair from the wrong end, and every
    # pair would come out longer than max_length.
    folder = Path(shutil.copytree(checkpoints["qwen3-lm"], tmp_path / "fine-tune"))
    (folder / RECIPE_FILE).write_text(json.dumps({"base": "qwen3-reranker", "max_length": 40}))
    with pytest.raises(UnsupportedModelError, match=r"max_length 40 .* no room"):
        Reranker(str(folder), device="cpu")
    reranker = Reranker(str(folder), device="cpu", max_length=MAX_LENGTH)  # an explicit budget stands
    assert reranker.encode("what is python", ["python " * 500]).num_tokens == MAX_LENGTH
